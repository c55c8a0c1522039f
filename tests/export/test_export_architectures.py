"""Exports of other layouts and per-layer-type RoPE: stock transformers reads them, `verify` says "same"; and
when the two sides disagree, `verify` says which one is suspect."""

from __future__ import annotations

import json

import pytest
import torch
from architectures import ARCHITECTURES, tiny_model

from longrope.attention import apply
from longrope.export import export_hf, plan_hf_rope
from longrope.export.verify import verify_export
from longrope.rope import LinearSpec, LongRopeSpec, YarnSpec


def arch(model_type):
    return next(a for a in ARCHITECTURES if a.model_type == model_type)


def transformers_rows(report):
    return {row.check: row for row in report.rows if row.runtime == "transformers"}


@pytest.mark.parametrize("model_type,spec", [
    ("cohere", YarnSpec(factor=4.0)),  # interleaved pairs
    ("gemma3_text", YarnSpec(factor=4.0)),  # RoPE per layer type
    ("gemma3", LinearSpec(factor=4.0)),  # the multimodal Gemma 3 that AutoModelForCausalLM loads
    ("deepseek_v2", LongRopeSpec(long_factor=[1.0 + 0.5 * i for i in range(8)], factor=4.0)),  # complex freqs_cis
])
def test_export_runs_the_same_in_stock_transformers(tmp_path, model_type, spec):
    model = tiny_model(arch(model_type))
    out = export_hf(model, None, spec, tmp_path / model_type, portable=True)
    report = verify_export(out)
    rows = transformers_rows(report)
    assert all(row.status == "same" and row.max_difference <= 1e-5 for row in rows.values()), report.to_markdown()


def test_gemma3_export_writes_rope_parameters_per_layer_type(tmp_path):
    model = apply(tiny_model(arch("gemma3_text")), YarnSpec(factor=4.0))
    out = export_hf(model, None, None, tmp_path / "g3")
    config = json.loads((out / "config.json").read_text())
    params = config["rope_parameters"]
    assert params["sliding_attention"] == {"rope_type": "default", "rope_theta": 10000.0}
    assert params["full_attention"]["rope_type"] == "yarn" and params["full_attention"]["rope_theta"] == 1e6
    report = json.loads((out / "longrope_export.json").read_text())
    assert report["layer_type"] == "full_attention"
    assert any("sliding_attention kept as they are" in note for note in report["notes"])
    vllm = [row for row in verify_export(out).rows if row.runtime == "vLLM (rules)"]
    assert all(row.status == "not modelled" and "per layer type" in row.advice for row in vllm)


def test_a_spec_on_the_sliding_layers_exports_there(tmp_path):
    model = apply(tiny_model(arch("gemma3_text")), LinearSpec(factor=2.0), layer_type="sliding_attention")
    out = export_hf(model, None, None, tmp_path / "sliding")
    params = json.loads((out / "config.json").read_text())["rope_parameters"]
    assert params["sliding_attention"]["rope_type"] == "linear"
    assert params["full_attention"] == {"rope_type": "default", "rope_theta": 1e6}
    assert all(row.status == "same" for row in transformers_rows(verify_export(out)).values())


def test_phimoe_longrope_export_carries_the_mscale_keys_its_module_reads():
    model = tiny_model(arch("phimoe"))
    plan = plan_hf_rope(model.config, LinearSpec(factor=4.0))
    params = plan.rope_parameters
    assert params["rope_type"] == "longrope" and params["short_mscale"] == params["long_mscale"] == 1.0


def test_verify_blames_longrope_when_its_patch_does_not_reproduce_the_model(tmp_path, monkeypatch):
    """The Cohere bug of old (half-split tables on an interleaved model): stock and ours disagree, and the
    unpatched model shows that our side is the one that changed it."""
    import longrope.attention.model_rope as reader
    from longrope.attention.rotary import HALF

    out = export_hf(tiny_model(arch("cohere")), None, YarnSpec(factor=4.0), tmp_path / "cohere")
    monkeypatch.setattr(reader, "_check_site", lambda module, tables, name: HALF)  # layout assumed, not read
    rows = transformers_rows(verify_export(out))
    assert all(row.status == "differs" for row in rows.values())
    assert all(row.advice.startswith("longrope is suspect") for row in rows.values()), rows


def test_verify_blames_the_export_when_its_config_says_something_else(tmp_path):
    out = export_hf(tiny_model(arch("llama")), None, YarnSpec(factor=4.0), tmp_path / "llama")
    config = json.loads((out / "config.json").read_text())
    config["rope_parameters"]["factor"] = 3.0  # the exported config no longer says what the spec says
    (out / "config.json").write_text(json.dumps(config))
    rows = transformers_rows(verify_export(out))
    assert rows["above window"].status == "differs"
    assert rows["above window"].advice.startswith("the export is suspect: stock transformers builds other rotary "
                                                  "tables"), rows["above window"].advice


def test_verify_blames_stock_transformers_when_the_tables_agree(tmp_path, monkeypatch):
    """Same tables, other logits: the stock model reads rope_parameters elsewhere (simulated: our side's
    attention differs after the tables)."""
    from longrope.export import verify

    out = export_hf(tiny_model(arch("llama")), None, YarnSpec(factor=4.0), tmp_path / "llama")
    real = verify.our_outputs

    def shifted(model, prompts, new_tokens):
        result = real(model, prompts, new_tokens)
        return {k: (v + 1.0 if k != "crossing tokens" else v) for k, v in result.items()}

    monkeypatch.setattr(verify, "our_outputs", shifted)
    rows = transformers_rows(verify_export(out))
    assert all(row.advice.startswith("stock transformers is suspect") for row in rows.values()), rows
    assert torch.is_tensor(torch.zeros(1))
