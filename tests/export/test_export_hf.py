"""HF export round trip: a patched tiny model, exported, then run by plain transformers in a fresh process that never
imports longrope, gives the same logits below and above the original window."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from export_helpers import LONG, SHORT, WINDOW
from factories import tiny_model

from longrope.attention.patch import apply, current_spec
from longrope.export import export_hf
from longrope.rope import (
    DynamicNTKSpec,
    LinearSpec,
    Llama3Spec,
    LongRopeSpec,
    NTKSpec,
    RopeGeometry,
    YarnSpec,
    load_spec,
    ntk_base,
)

LENGTHS = (WINDOW // 2, 3 * WINDOW + 8)  # below and above the original window (ascending: see dynamic NTK)
LONGROPE = LongRopeSpec(long_factor=LONG, short_factor=SHORT, factor=4.0)
CASES = {
    # case: (arch, spec, expected rope_type, atol)
    "llama-pi": ("llama", LinearSpec(factor=4.0), "linear", 1e-5),
    "llama-yarn": ("llama", YarnSpec(factor=4.0), "yarn", 1e-5),
    "llama-dynamic": ("llama", DynamicNTKSpec(factor=4.0), "dynamic", 1e-5),
    "llama-llama3": ("llama", Llama3Spec(factor=4.0), "llama3", 1e-5),
    "llama-ntk": ("llama", NTKSpec(factor=4.0), "default", 1e-5),
    "llama-longrope": ("llama", LONGROPE, "longrope", 1e-5),
    "mistral-longrope": ("mistral", LONGROPE, "longrope", 1e-5),
    "qwen2-longrope": ("qwen2", LONGROPE, "longrope", 1e-5),
    "phi3-longrope": ("phi3", LONGROPE, "longrope", 1e-5),
    # Phi-3 accepts only longrope: YaRN is written as equal short/long factors; transformers then computes
    # 1 / (lambda * b^(2i/d)) instead of YaRN's blend, equal up to float32 rounding of lambda (~1e-7 relative).
    "phi3-yarn-as-longrope": ("phi3", YarnSpec(factor=4.0), "longrope", 5e-5),
}

# Runs in a fresh interpreter: plain transformers only. Fails if anything imported longrope.
RUNNER = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM
    jobs = json.loads(sys.argv[1])
    for job in jobs:
        model = AutoModelForCausalLM.from_pretrained(job["dir"], dtype=torch.float32).eval()
        inputs = torch.load(job["ids"])
        with torch.no_grad():
            out = [model(ids).logits for ids in inputs]  # ascending lengths, one fresh model per case
        torch.save(out, job["out"])
    assert not any(name == "longrope" or name.startswith("longrope.") for name in sys.modules), "longrope imported"
    print("ok", len(jobs))
""")


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory):
    """{case: (our logits per length, stock transformers' logits per length, exported dir)}."""
    root = tmp_path_factory.mktemp("hf-export")
    jobs, ours = [], {}
    torch.manual_seed(1)
    inputs = [torch.randint(3, 97, (2, n)) for n in LENGTHS]
    for name, (arch, spec, _, _) in CASES.items():
        model = apply(tiny_model(arch), spec)
        out_dir = export_hf(model, None, spec, root / name)
        with torch.no_grad():
            ours[name] = ([model(ids).logits for ids in inputs], out_dir)
        torch.save(inputs, root / f"{name}.ids.pt")
        jobs.append({"dir": str(out_dir), "ids": str(root / f"{name}.ids.pt"), "out": str(root / f"{name}.out.pt")})
    result = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(jobs)], check=False, capture_output=True,
                            text=True, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: (ours[name][0], torch.load(job["out"]), ours[name][1]) for name, job in zip(CASES, jobs)}


@pytest.mark.parametrize("case", list(CASES))
def test_stock_transformers_matches_patched_model(round_trips, case):
    ours, theirs, _ = round_trips[case]
    atol = CASES[case][3]
    for length, a, b in zip(LENGTHS, ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=atol, rtol=0,
                                   msg=lambda m, n=length: f"{case} at {n} tokens: {m}")


@pytest.mark.parametrize("case", list(CASES))
def test_config_and_files(round_trips, case):
    arch, spec, rope_type, _ = CASES[case]
    out_dir = round_trips[case][2]
    names = {p.name for p in out_dir.iterdir()}
    assert {"config.json", "model.safetensors", "longrope_spec.json", "longrope_export.json"} <= names
    assert not any(p.name.startswith(".") for p in out_dir.parent.iterdir()), "staging directory left behind"
    config = json.loads((out_dir / "config.json").read_text())
    params = config["rope_parameters"]
    assert params["rope_type"] == rope_type
    assert "quantization_config" not in config
    assert load_spec(out_dir / "longrope_spec.json") == spec.with_window(WINDOW)
    if rope_type == "dynamic":
        assert config["max_position_embeddings"] == WINDOW  # transformers' dynamic NTK reads L from here
    else:
        assert config["max_position_embeddings"] == 4 * WINDOW
    if rope_type in ("longrope", "yarn", "llama3"):
        assert params["original_max_position_embeddings"] == WINDOW
    if rope_type == "longrope" and isinstance(spec, LongRopeSpec):
        assert params["long_factor"] == LONG and params["short_factor"] == SHORT and params["factor"] == 4.0
    if arch == "phi3":
        assert config["original_max_position_embeddings"] == WINDOW  # Phi-3 reads the top-level field first
    if isinstance(spec, NTKSpec):
        assert params["rope_theta"] == pytest.approx(ntk_base(4.0, RopeGeometry(dim=16, base=1e4, original_window=64)))


def test_export_uses_the_applied_spec_and_keeps_the_model_patched(tmp_path):
    spec = LinearSpec(factor=2.0)
    model = apply(tiny_model("llama"), spec)
    out = export_hf(model, None, None, tmp_path / "out", target_window=100)
    assert current_spec(model) == spec  # the live model is untouched
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "linear" and config["max_position_embeddings"] == 100


def test_tokenizer_is_saved(tmp_path, bpe_tokenizer):
    from export_helpers import tiny_with_tokenizer
    from transformers import AutoTokenizer

    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    out = export_hf(model, bpe_tokenizer, LONGROPE, tmp_path / "out")
    loaded = AutoTokenizer.from_pretrained(out)
    text = "def hello(fox): return 1"
    assert loaded(text).input_ids == bpe_tokenizer(text).input_ids
