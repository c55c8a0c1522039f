"""PoSE in a plan: the fine-tune stage's pose keys reach the FinetuneConfig, and the length check of a PoSE stage
looks at its target length, not its (short) training window."""

from __future__ import annotations

import pytest

from longrope.errors import LongRopeError
from longrope.recipes import progressive
from longrope.recipes.plan import parse_plan
from longrope.recipes.progressive import check_lengths
from longrope.rope import LinearSpec, save_spec
from longrope.train import finetuning as finetune_module


def test_the_plan_key_reaches_the_config(tmp_path, monkeypatch):
    stages = [{"kind": "finetune", "spec": "spec.json", "length": 64, "steps": 2, "pose": True,
               "target_length": 1024}]
    plan = parse_plan({"model": {"name": "tiny"}, "stages": stages}, source=str(tmp_path / "plan.toml"))
    save_spec(LinearSpec(factor=16.0), tmp_path / "spec.json")
    captured = {}

    def fake_finetune(model, tokenizer, spec, config, out, resume=False, progress=True):
        captured["config"] = config
        (out / "model").mkdir(parents=True)
        (out / "model" / "longrope_finetune.json").write_text("{}")
        return out / "model"

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    ctx = progressive.PipelineContext(plan=plan, out_dir=tmp_path, model="tiny")
    monkeypatch.setattr(progressive.PipelineContext, "load", lambda self, dtype=None: (None, None))
    progressive.run_finetune(plan.stages[0], ctx, tmp_path / "01-finetune", progress=False)
    assert captured["config"].pose is True and captured["config"].target_length == 1024

    bad = [{**stages[0], "pose_chunks": 1}]
    with pytest.raises(LongRopeError, match=r"stages\[0\].*one chunk never skips"):
        parse_plan({"model": {"name": "tiny"}, "stages": bad})
    bad = [{**stages[0], "target_length": 32}]
    with pytest.raises(LongRopeError, match=r"stages\[0\].*must be larger than the training window"):
        parse_plan({"model": {"name": "tiny"}, "stages": bad})


def test_a_pose_stage_trains_below_the_window_but_must_target_beyond_it(tiny, train_corpus_dir):
    _, tokenizer = tiny
    stage = {"kind": "finetune", "spec": "spec.json", "length": 32, "steps": 2, "pose": True, "target_length": 256}
    plan = parse_plan({"model": {"name": "tiny"}, "data": {"corpus": str(train_corpus_dir)}, "stages": [stage]})
    check_lengths(plan, tokenizer, 64, list(plan.stages))  # a 32-token window is fine: the target is 4x the window
    plan = parse_plan({"model": {"name": "tiny"}, "data": {"corpus": str(train_corpus_dir)},
                       "stages": [{**stage, "target_length": 48}]})
    with pytest.raises(LongRopeError, match=r"stages\[0\]\.target_length: 48 tokens is not beyond .* window \(64\)"):
        check_lengths(plan, tokenizer, 64, list(plan.stages))
