"""`longrope verify`: stock transformers (own process), llama.cpp and vLLM's rules against our patched model."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from export_helpers import LONG, SHORT, WINDOW
from factories import tiny_model

from longrope.cli import main
from longrope.errors import LongRopeError
from longrope.export import export_hf
from longrope.export.verify import CHECKS, verify_export, vllm_cos_sin
from longrope.rope import Llama3Spec, LinearSpec, LongRopeSpec, RopeGeometry, YarnSpec

SPECS = {
    "longrope": LongRopeSpec(long_factor=LONG, short_factor=SHORT, factor=4.0),
    "yarn": YarnSpec(factor=4.0),
    "linear": LinearSpec(factor=4.0),
    "llama3": Llama3Spec(factor=4.0),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Exports of one tiny random Llama: each spec, plus the portable form of the LongRoPE one."""
    root = tmp_path_factory.mktemp("verify")
    model = tiny_model("llama")
    out = {name: export_hf(model, None, spec, root / name) for name, spec in SPECS.items()}
    out["portable"] = export_hf(model, None, SPECS["longrope"], root / "portable", portable=True)
    return out


def _rows(report, runtime):
    return {row.check: row for row in report.rows if row.runtime == runtime}


@pytest.mark.parametrize("name", ["yarn", "linear", "llama3", "portable"])
def test_one_table_exports_are_the_same_in_stock_transformers(exports, name):
    report = verify_export(exports[name])
    rows = _rows(report, "transformers")
    assert set(rows) == set(CHECKS)
    assert all(row.status == "same" and row.max_difference <= 2e-3 for row in rows.values()), report.to_markdown()
    assert all(row.status == "not exported" for row in _rows(report, "llama.cpp").values())
    vllm = _rows(report, "vLLM (rules)")
    expected = "same" if name == "portable" else "not modelled"
    assert all(row.status == expected for row in vllm.values()), report.to_markdown()
    assert not report.differs


def test_short_and_long_factors_differ_when_a_generation_crosses_the_window(exports):
    """transformers re-decides per forward call (Llama keeps its cache): reported, not hidden."""
    report = verify_export(exports["longrope"])
    rows = _rows(report, "transformers")
    assert rows["below window"].status == "same" and rows["above window"].status == "same"
    crossing = rows["crossing generation"]
    assert crossing.status == "differs" and crossing.max_difference > 1e-2 and "--portable" in crossing.advice
    vllm = _rows(report, "vLLM (rules)")
    assert vllm["below window"].status == "differs" and "max-model-len" in vllm["below window"].advice
    assert vllm["above window"].status == "same"
    assert report.differs and report.lengths["crossing generation"] < WINDOW


def test_cli_exit_status_and_report_files(exports, tmp_path, monkeypatch, capsys):
    def run(*args):
        monkeypatch.setattr(sys, "argv", ["longrope", "verify", *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        return exit_info.value.code or 0

    assert run(exports["longrope"], "--out", tmp_path / "report") == 1
    assert "differs" in capsys.readouterr().out
    saved = json.loads((tmp_path / "report" / "verify.json").read_text())
    assert saved["differs"] is True and len(saved["rows"]) == 3 * len(CHECKS)
    monkeypatch.chdir(exports["portable"].parent)
    assert run(exports["portable"].name) == 0  # a relative path (the stock run has its own working directory)
    assert run(exports["portable"], "--tolerance", "nan") == 2


def test_bad_input_is_a_clear_error(exports, tmp_path):
    with pytest.raises(LongRopeError, match="not a directory"):
        verify_export(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LongRopeError, match="no config.json"):
        verify_export(tmp_path / "empty")
    import shutil

    copy = shutil.copytree(exports["yarn"], tmp_path / "no-spec")
    (copy / "longrope_spec.json").unlink()
    with pytest.raises(LongRopeError, match="has no longrope_spec.json"):
        verify_export(copy)


def test_a_gguf_without_rope_factors_is_refused(tmp_path, bpe_tokenizer):
    from export_helpers import tiny_with_tokenizer

    from longrope.export.gguf_export import write_gguf

    gguf = write_gguf(tiny_with_tokenizer("llama", bpe_tokenizer), bpe_tokenizer, None, tmp_path / "plain.gguf")
    with pytest.raises(LongRopeError, match="no rope factors"):
        verify_export(gguf)


def _vllm_transcribed(params, max_pos, original, base, dim, positions, max_model_len):
    """vLLM's Phi3LongRoPEScaledRotaryEmbedding as its source spells it (float32 torch, one cache of short then
    long rows, indexed by position + original window when the long factors are on)."""
    use_long = max_model_len > original
    scale = max_pos / original
    factor = 1.0 if scale <= 1.0 else (1 + np.log(scale) / np.log(original)) ** 0.5

    def cache(length, factors, mscale):
        inv = 1.0 / (torch.tensor(factors, dtype=torch.float32)
                     * base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        freqs = torch.einsum("i,j -> ij", torch.arange(length, dtype=torch.float), inv)
        return torch.cat((freqs.cos() * mscale, freqs.sin() * mscale), dim=-1)

    table = torch.cat([cache(original, params["short_factor"], params.get("short_mscale") or factor),
                       cache(max_pos, params["long_factor"], params.get("long_mscale") or factor)])
    index = torch.as_tensor(positions) + (original if use_long else 0)
    return table[index].chunk(2, dim=-1)


@pytest.mark.parametrize("max_model_len, mscale", [(None, None), (64, None), (None, 1.2)])
def test_the_vllm_reference_reproduces_vllms_cos_sin(max_model_len, mscale):
    geometry = RopeGeometry(dim=16, base=10000.0, original_window=64)
    params = {"rope_type": "longrope", "long_factor": LONG, "short_factor": SHORT,
              "original_max_position_embeddings": 64}
    if mscale is not None:
        params["short_mscale"] = params["long_mscale"] = mscale
    config = {"max_position_embeddings": 256}
    positions = np.arange(0, max_model_len or 250, 7)  # a deployment never sees positions past max_model_len
    cos, sin = vllm_cos_sin(params, config, geometry, positions, max_model_len)
    ref_cos, ref_sin = _vllm_transcribed(params, 256, 64, 10000.0, 16, positions, max_model_len or 256)
    np.testing.assert_allclose(cos, ref_cos.numpy(), atol=2e-4)
    np.testing.assert_allclose(sin, ref_sin.numpy(), atol=2e-4)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("name", ["portable", "yarn"])
def test_llama_cpp_runs_a_gguf_export_the_same_at_every_check(tmp_path, bpe_tokenizer, name):
    from export_helpers import tiny_with_tokenizer

    from longrope.export import export_model

    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    spec = SPECS["longrope"] if name == "portable" else SPECS[name]
    export_model(model, bpe_tokenizer, spec, tmp_path / name, gguf=True, portable=name == "portable")
    report = verify_export(tmp_path / name)
    rows = _rows(report, "llama.cpp")
    assert set(rows) == set(CHECKS)
    assert all(row.status == "same" for row in rows.values()), report.to_markdown()
    assert not report.differs
