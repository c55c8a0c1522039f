"""`export_model`: the HF directory and its GGUF planned once, before writing, and published as one directory."""

from __future__ import annotations

import json

import pytest
from export_helpers import LONG, tiny_with_tokenizer

from longrope.errors import LongRopeError
from longrope.export import bundle, export_model, plan_export, read_gguf
from longrope.rope import DynamicNTKSpec, LongRopeSpec, YarnSpec

SHORT_AND_LONG = LongRopeSpec(long_factor=LONG, short_factor=[1.0] * len(LONG), factor=4.0)


def test_the_gguf_is_written_inside_the_export_with_the_planned_factors(tmp_path, bpe_tokenizer):
    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    plan = export_model(model, bpe_tokenizer, SHORT_AND_LONG, tmp_path / "out", gguf=True, portable=True)
    assert {"config.json", "model.safetensors", "model.gguf", "longrope_spec.json"} <= {
        p.name for p in (tmp_path / "out").iterdir()}
    metadata, tensors = read_gguf(tmp_path / "out" / "model.gguf")
    for name, table in plan.gguf.tensors.items():
        assert tensors[name].tolist() == table.tolist()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["rope_parameters"]["short_factor"] == config["rope_parameters"]["long_factor"]  # portable
    assert plan.spec.short_factor == tuple(LONG) and plan.lost == []


def test_everything_is_checked_before_anything_is_written(tmp_path, bpe_tokenizer):
    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    # llama.cpp has one factor table for Llama: short+long cannot go into a llama GGUF without --lossy ...
    with pytest.raises(LongRopeError, match="short"):
        export_model(model, bpe_tokenizer, SHORT_AND_LONG, tmp_path / "out", gguf=True)
    assert not (tmp_path / "out").exists()
    # ... and dropping it is listed once, from both plans together.
    plan = plan_export(model, SHORT_AND_LONG, gguf=True, lossy=True)
    assert plan.lost and len(plan.lost) == len(set(plan.lost))
    with pytest.raises(LongRopeError, match="dynamic NTK"):
        plan_export(model, DynamicNTKSpec(factor=2.0), portable=True)


def test_a_failing_gguf_step_leaves_the_previous_export_untouched(tmp_path, bpe_tokenizer, monkeypatch):
    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    out = tmp_path / "out"
    export_model(model, bpe_tokenizer, YarnSpec(factor=2.0), out, gguf=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bundle, "export_gguf", broken)
    with pytest.raises(OSError, match="disk full"):
        export_model(model, bpe_tokenizer, YarnSpec(factor=4.0), out, gguf=True, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("copy_source", [False, True])
def test_the_rope_plans_are_made_once(tmp_path, bpe_tokenizer, monkeypatch, copy_source):
    from longrope.export import gguf_export, hf

    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    source = None
    if copy_source:  # --gguf-from: a GGUF to copy with the new factors
        source = gguf_export.export_gguf(None, tmp_path / "source.gguf", model=model, tokenizer=bpe_tokenizer)
    calls = []

    def counted(real):
        def plan(*args, **kwargs):
            calls.append(real.__name__)
            return real(*args, **kwargs)
        return plan

    for module in (bundle, gguf_export):
        monkeypatch.setattr(module, "plan_gguf_rope", counted(gguf_export.plan_gguf_rope))
    for module in (bundle, hf):
        monkeypatch.setattr(module, "plan_hf_rope", counted(hf.plan_hf_rope))
    plan = export_model(model, bpe_tokenizer, YarnSpec(factor=2.0), tmp_path / "out", gguf=True, gguf_source=source)
    assert sorted(calls) == ["plan_gguf_rope", "plan_hf_rope"]
    metadata, tensors = read_gguf(tmp_path / "out" / "model.gguf")  # ... and that one plan is what was written
    assert {name: tensors[name].tolist() for name in plan.gguf.tensors} == {
        name: table.tolist() for name, table in plan.gguf.tensors.items()}
    assert all(metadata[key] == pytest.approx(value) for key, value in plan.gguf.keys.items())
