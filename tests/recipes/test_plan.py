"""Plan files: the shipped plan validates; missing fields and unworkable orders are errors naming the field; the
pipeline skips finished stages and resumes the interrupted one (fake cheap stage functions, no search)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from longrope.errors import LongRopeError
from longrope.recipes import progressive
from longrope.recipes.plan import default_plan_path, load_plan, parse_plan
from longrope.rope import LongRopeSpec, YarnSpec, save_spec

BASE = {
    "model": {"name": "tiny"},
    "stages": [
        {"kind": "search", "factor": 4},
        {"kind": "finetune", "length": 1024, "steps": 10},
        {"kind": "search", "factor": 16},
        {"kind": "search_short"},
        {"kind": "export"},
    ],
}


def plan_with(edit) -> dict:
    data = copy.deepcopy(BASE)
    edit(data)
    return data


def test_the_shipped_tiny_plan_is_valid():
    plan = load_plan()
    assert plan.source == str(default_plan_path())
    assert [s.kind for s in plan.stages] == ["search", "finetune", "search", "search_short", "export"]
    assert [s.name for s in plan.stages][:2] == ["01-search", "02-finetune"]
    assert plan.stages[2].settings["factor"] > plan.stages[0].settings["factor"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("model"), r"\[model\]"),
        (lambda d: d["model"].pop("name"), r"model\.name"),
        (lambda d: d.pop("stages"), r"\[\[stages\]\]"),
        (lambda d: d["stages"][0].pop("kind"), r"stages\[0\]\.kind"),
        (lambda d: d["stages"][0].update(kind="train"), r"stages\[0\]\.kind = 'train'"),
        (lambda d: d["stages"][0].pop("factor"), r"missing field stages\[0\]\.factor"),
        (lambda d: d["stages"][1].pop("steps"), r"missing field stages\[1\]\.steps"),
        (lambda d: d["stages"][1].pop("length"), r"missing field stages\[1\]\.length"),
        (lambda d: d["stages"][1].update(learning_rate=1), r"stages\[1\].*unknown setting.*learning_rate"),
        (lambda d: d["stages"][2].update(factor=4), r"stages\[2\]\.factor = 4 must be larger than stages\[0\]\.factor"),
        (lambda d: d["stages"][2].update(factor=2), r"stages\[2\]\.factor"),
        (lambda d: d["stages"][0].update(factor=1), r"stages\[0\]\.factor must be > 1"),
        (lambda d: d["stages"].pop(0), r"stages\[0\] \(finetune\): no scaling spec.*stages\[0\]\.spec"),
        (lambda d: d["stages"].insert(0, d["stages"].pop(3)), r"stages\[0\] \(search_short\).*after a kind"),
        (lambda d: d["stages"].append({"kind": "search", "factor": 32}),
         r"stages\[5\].*only evaluate stages can follow the export stage stages\[4\]"),
        (lambda d: d["stages"][3].update(length=512), r"stages\[3\]\.length.*original window"),
        (lambda d: d.update(extra=1), r"unknown top-level field.*extra"),
        (lambda d: d["stages"][1].update(mixed=True, mixed_short_share="0.2"),
         r"stages\[1\]\.mixed_short_share is '0\.2' \(a string\); expected a finite number"),
        (lambda d: d["stages"][1].update(mixed=True, mixed_short_share=1.5),
         r"stages\[1\] \(finetune\): fine-tune: mixed_short_share must be a number between 0 and 1"),
    ],
)
def test_bad_plans_are_errors_that_name_the_field(edit, message):
    with pytest.raises(LongRopeError, match=message):
        parse_plan(plan_with(edit))


def test_finetune_first_is_fine_with_its_own_spec():
    plan = parse_plan(plan_with(lambda d: (d["stages"].pop(0), d["stages"][0].update(spec="pi.json"))))
    assert plan.stages[0].kind == "finetune"


def test_a_finetune_stage_takes_the_share_of_short_tokens_of_mixed_training():
    from longrope.train.config import FinetuneConfig

    plan = parse_plan(plan_with(lambda d: d["stages"][1].update(mixed=True, mixed_short_share=0.2)))
    config = FinetuneConfig.from_dict(plan.stages[1].settings)  # what run_finetune builds (plus corpus and seed)
    assert config.mixed and config.mixed_short_share == 0.2


def test_plan_file_errors(tmp_path):
    with pytest.raises(LongRopeError, match="does not exist"):
        load_plan(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 'tiny'")
    with pytest.raises(LongRopeError, match="not valid TOML"):
        load_plan(bad)
    order = tmp_path / "order.toml"
    order.write_text('[model]\nname = "tiny"\n\n[[stages]]\nkind = "search"\nfactor = 8\n\n'
                     '[[stages]]\nkind = "search"\nfactor = 4\n')
    with pytest.raises(LongRopeError, match=r"order\.toml: stages\[1\]\.factor = 4 must be larger"):
        load_plan(order)


# ------------------------------------------------------------------------------------------ stage skipping


class FakeStages:
    """Cheap stand-ins for the stage functions: each records its call and writes what the real one would."""

    def __init__(self):
        self.calls: list[str] = []
        self.fail_at: str | None = None

    def spec_writer(self, kind):
        def run(stage, ctx, stage_dir: Path, progress):
            self.calls.append(stage.name)
            if stage.name == self.fail_at:
                raise KeyboardInterrupt  # the pipeline is killed in this stage
            factor = float(stage.settings.get("factor", 1) if kind == "search" else 2)
            save_spec(LongRopeSpec(long_factor=[factor] * 4, factor=max(factor, 1.0)), stage_dir / "best_spec.json")
            (stage_dir / "model_seen.txt").write_text(f"{ctx.model}\n{ctx.spec}\n")
            return {"spec": "best_spec.json"}
        return run

    def finetune(self, stage, ctx, stage_dir, progress):
        self.calls.append(stage.name)
        (stage_dir / "model").mkdir(exist_ok=True)
        (stage_dir / "model" / "spec_used.txt").write_text(str(ctx.spec))
        return {"model": "model", "spec": "../01-search/best_spec.json"}

    def export(self, stage, ctx, stage_dir, progress):
        self.calls.append(stage.name)
        (stage_dir / "exported_from.txt").write_text(f"{ctx.model}\n{ctx.spec}\n")
        (stage_dir / "hf").mkdir(exist_ok=True)
        return {"export": "hf"}


@pytest.fixture
def fakes(monkeypatch):
    fake = FakeStages()
    monkeypatch.setattr(progressive, "STAGE_RUNNERS", {
        "search": fake.spec_writer("search"), "search_short": fake.spec_writer("search_short"),
        "finetune": fake.finetune, "export": fake.export,
    })
    monkeypatch.setattr(progressive, "preflight", lambda ctx, pending: None)
    return fake


def test_a_killed_pipeline_resumes_at_the_stage_it_was_in(fakes, tmp_path):
    plan = parse_plan(copy.deepcopy(BASE))
    out = tmp_path / "out"
    fakes.fail_at = "03-search"
    with pytest.raises(KeyboardInterrupt):
        progressive.extend(None, out, plan=plan, progress=False)
    assert fakes.calls == ["01-search", "02-finetune", "03-search"]
    assert (out / "02-finetune" / "DONE").is_file() and not (out / "03-search" / "DONE").exists()

    fakes.calls.clear()
    fakes.fail_at = None
    final = progressive.extend(None, out, plan=plan, progress=False)
    assert fakes.calls == ["03-search", "04-search-short", "05-export"]  # finished stages skipped
    assert final == out / "04-search-short" / "best_spec.json"
    # The second search ran on the fine-tuned model, the export used the fine-tuned model and the final spec.
    model_seen, spec_seen = (out / "03-search" / "model_seen.txt").read_text().split()
    assert model_seen == str(out / "02-finetune" / "model")
    assert Path(spec_seen).resolve() == (out / "01-search" / "best_spec.json").resolve()
    assert (out / "05-export" / "exported_from.txt").read_text().split() == [
        str(out / "02-finetune" / "model"), str(final)]
    summary = json.loads((out / "pipeline.json").read_text())
    assert summary["stages"]["01-search"]["skipped"] and not summary["stages"]["05-export"]["skipped"]

    fakes.calls.clear()
    assert progressive.extend(None, out, plan=plan, progress=False) == final
    assert fakes.calls == []  # everything done: nothing runs again

    with pytest.raises(LongRopeError, match="already holds"):
        progressive.extend(None, out, plan=plan, resume=False, progress=False)


def test_a_changed_plan_does_not_reuse_finished_stages(fakes, tmp_path):
    out = tmp_path / "out"
    progressive.extend(None, out, plan=parse_plan(copy.deepcopy(BASE)), progress=False)
    changed = plan_with(lambda d: d["stages"][1].update(steps=20))
    with pytest.raises(LongRopeError, match="02-finetune was completed by a different plan"):
        progressive.extend(None, out, plan=parse_plan(changed), progress=False)


def test_a_target_length_no_document_reaches_is_a_clear_error(tiny_model_dir, cache, tmp_path):
    from transformers import AutoTokenizer

    from longrope.models.tiny import TinyConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("short text " * 50)
    window = TinyConfig.test().window
    data = plan_with(lambda d: d.update(data={"corpus": str(corpus)}))
    plan = parse_plan(data)
    with pytest.raises(LongRopeError, match=r"stages\[0\]\.factor: the target length 256 is reached by no document"):
        progressive.check_lengths(plan, tokenizer, window, list(plan.stages))
    too_short = parse_plan(plan_with(lambda d: d["stages"][1].update(length=window)))
    with pytest.raises(LongRopeError, match=r"stages\[1\]\.length: 64 tokens is not beyond"):
        progressive.check_lengths(too_short, tokenizer, window, [too_short.stages[1]])


def _finished_pipeline(tmp_path: Path) -> Path:
    """The output of a 4x -> fine-tune -> 16x -> short-factors plan run with the fake stages."""
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('[model]\nname = "tiny"\n\n[[stages]]\nkind = "search"\nfactor = 4\n\n'
                         '[[stages]]\nkind = "finetune"\nlength = 1024\nsteps = 10\n\n'
                         '[[stages]]\nkind = "search"\nfactor = 16\n\n[[stages]]\nkind = "search_short"\n')
    out = tmp_path / "out"
    progressive.extend(plan_file, out, progress=False)
    return out


def test_comparison_rows_follow_the_pipeline_outputs(fakes, tmp_path):
    from longrope.recipes.compare import comparison_rows
    from longrope.rope import SPEC_FILE

    out = _finished_pipeline(tmp_path)
    for name in ("pi", "yarn"):
        tuned = tmp_path / name / "model"
        tuned.mkdir(parents=True)
        (tuned / "config.json").write_text("{}")
        save_spec(LongRopeSpec(long_factor=[4.0] * 4, factor=4.0), tuned / SPEC_FILE)
    rows = comparison_rows(out, tmp_path / "pi", tmp_path / "yarn")
    assert list(rows) == [
        "(a) LongRoPE search 4x, no fine-tuning", "(b) LongRoPE 4x + fine-tune", "(c) + second search 16x",
        "(d) + short factors", "PI 4x, no fine-tuning", "PI 4x + fine-tune", "PI fine-tune, then PI 16x",
        "YaRN 4x, no fine-tuning", "YaRN 4x + fine-tune", "YaRN fine-tune, then YaRN 16x",
        "base model, own RoPE",
    ]
    assert rows["YaRN fine-tune, then YaRN 16x"] == (str(tmp_path / "yarn" / "model"), YarnSpec(factor=16.0))
    assert list(comparison_rows(out, None))[4:] == [  # no fine-tuned baselines: their untuned rows only
        "PI 4x, no fine-tuning", "YaRN 4x, no fine-tuning", "base model, own RoPE"]
    assert rows["(a) LongRoPE search 4x, no fine-tuning"][0] == "tiny"
    assert rows["(c) + second search 16x"] == (str(out / "02-finetune" / "model"), rows["(c) + second search 16x"][1])
    assert rows["(c) + second search 16x"][1].factor == 16
    assert rows["PI fine-tune, then PI 16x"][1].factor == 16 and rows["base model, own RoPE"][1] is None


def test_the_comparison_loads_each_model_once_and_keeps_the_rows_order(fakes, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from longrope.recipes.compare import comparison_rows, compare_extension

    out = _finished_pipeline(tmp_path)
    loads, evaluated = [], []

    def load_model(name, dtype=None, device=None):
        loads.append(name)
        return SimpleNamespace(name=name), None

    def ppl(model, tokenizer, specs, corpus, lengths, **kwargs):
        (name,) = specs
        evaluated.append((name, model.name))
        return SimpleNamespace(ppl=lambda: {name: {n: float(len(evaluated)) for n in lengths}})

    def keys(model, tokenizer, specs, lengths, **kwargs):
        (name,) = specs
        return SimpleNamespace(accuracy=lambda: {name: {n: 0.5 for n in lengths}})

    monkeypatch.setattr("longrope.models.loading.load_model", load_model)
    monkeypatch.setattr("longrope.attention.rotary.model_geometry", lambda model: SimpleNamespace(original_window=64))
    import longrope.eval.passkey  # noqa: F401 -- loaded, so that sys.modules has both
    import longrope.eval.perplexity  # noqa: F401
    # by module object: longrope.eval re-exports functions that shadow these module names
    monkeypatch.setattr(sys.modules["longrope.eval.perplexity"], "evaluate_ppl", ppl)
    monkeypatch.setattr(sys.modules["longrope.eval.passkey"], "evaluate_passkey", keys)
    results = compare_extension(out, progress=False)
    rows = comparison_rows(out, None)
    assert list(results) == list(rows)  # the table in the rows' order ...
    assert sorted(loads) == sorted(set(loads)) == sorted({model for model, _ in rows.values()})  # ... each model once
    assert all(rows[name][0] == model for name, model in evaluated)  # every row on its own model
    assert json.loads((out / "comparison.json").read_text())["rows"] == results
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the plot, beside the table


def test_the_plot_shows_the_plan_and_yarn_after_fine_tuning(tmp_path):
    from longrope.recipes.compare import plot_comparison, plotted_rows

    names = ["(a) LongRoPE search 4x, no fine-tuning", "(b) LongRoPE 4x + fine-tune", "(c) + second search 16x",
             "(d) + short factors", "PI 4x, no fine-tuning", "PI 4x + fine-tune", "PI fine-tune, then PI 16x",
             "YaRN 4x, no fine-tuning", "YaRN 4x + fine-tune", "YaRN fine-tune, then YaRN 16x",
             "base model, own RoPE"]
    assert plotted_rows(names) == ["(c) + second search 16x", "(d) + short factors", "YaRN 4x + fine-tune",
                                   "YaRN fine-tune, then YaRN 16x", "base model, own RoPE"]
    lengths = [64, 256, 1024]
    rows = {name: {"ppl": {str(n): 10.0 + i + n / 100 for n in lengths},
                   "passkey": {"64": None, "256": 0.5, "1024": 0.1 * i}} for i, name in enumerate(names)}
    path = plot_comparison({"lengths": lengths, "rows": rows, "settings": {"docs": 2, "trials": 3}},
                           tmp_path / "sub" / "comparison.png", window=64)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


# ------------------------------------------------------------------------- scales, plan copy, DONE markers


def _with_length(index: int, length: int):
    return lambda d: (d["stages"][index].pop("factor"), d["stages"][index].update(length=length))


def test_each_search_extends_further_whether_it_gives_factor_or_length():
    both_lengths = plan_with(lambda d: (_with_length(0, 4096)(d), _with_length(2, 2048)(d)))
    with pytest.raises(LongRopeError, match=r"stages\[2\]\.length = 2048 must be larger than stages\[0\]\.length = "
                                            r"4096"):
        parse_plan(both_lengths)  # the same form: compared as soon as the plan is read
    mixed = parse_plan(plan_with(_with_length(2, 512)))  # 512 tokens vs 4x: needs the model's window
    with pytest.raises(LongRopeError, match=r"stages\[2\]\.length = 512 \(2x the window 256\) must be larger than "
                                            r"stages\[0\]\.factor = 4"):
        progressive.check_lengths(mixed, None, 256, [])  # at the start of a run, before any document is read
    progressive.check_search_order(parse_plan(plan_with(_with_length(2, 2048))), 256)  # 8x after 4x: fine


def test_extend_resumes_from_the_plan_copy_it_saved(fakes, tmp_path):
    from typer.testing import CliRunner

    from longrope.cli import app

    out = _finished_pipeline(tmp_path)
    assert (out / "plan.toml").read_text() == (tmp_path / "plan.toml").read_text()
    fakes.calls.clear()
    result = CliRunner().invoke(app, ["extend", str(out / "plan.toml"), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert fakes.calls == [] and "final spec:" in result.output  # same plan: every stage is reused
    assert (out / "plan.toml").read_text() == (tmp_path / "plan.toml").read_text()


def test_resumed_with_the_copy_a_plans_relative_paths_are_still_its_own(fakes, tmp_path, monkeypatch):
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "plan.toml").write_text('[model]\nname = "tiny"\n\n[[stages]]\nkind = "finetune"\nlength = 1024\n'
                                     'steps = 10\nspec = "pi.json"\n')
    seen = []

    def finetune(stage, ctx, stage_dir, progress):
        seen.append(progressive._plan_path(ctx, stage.settings["spec"]))
        raise KeyboardInterrupt  # killed before it finishes, so the resumed run starts it again

    monkeypatch.setitem(progressive.STAGE_RUNNERS, "finetune", finetune)
    out = tmp_path / "out"
    for plan_file in (plans / "plan.toml", out / "plan.toml"):
        with pytest.raises(KeyboardInterrupt):
            progressive.extend(plan_file, out, progress=False)
    assert seen == [plans.resolve() / "pi.json"] * 2


def test_a_done_marker_whose_file_is_gone_runs_its_stage_again(fakes, tmp_path):
    out = _finished_pipeline(tmp_path)
    (out / "04-search-short" / "best_spec.json").unlink()
    fakes.calls.clear()
    final = progressive.extend(out / "plan.toml", out, progress=False)
    assert fakes.calls == ["04-search-short"] and final.is_file()

    (out / "02-finetune" / "model").rename(out / "02-finetune" / "moved")  # a fine-tuned model moved away
    fakes.calls.clear()
    assert progressive.extend(out / "plan.toml", out, progress=False).is_file()
    assert fakes.calls == ["02-finetune", "03-search", "04-search-short"]  # it and every stage after it

    (out / "03-search" / "DONE").write_text('{"fingerprint": 3}')  # a damaged marker is no marker
    fakes.calls.clear()
    progressive.extend(out / "plan.toml", out, progress=False)
    assert fakes.calls == ["03-search", "04-search-short"]


def test_a_final_spec_that_is_not_there_is_never_reported(fakes, tmp_path, monkeypatch):
    plan = parse_plan(copy.deepcopy(BASE))
    monkeypatch.setitem(progressive.STAGE_RUNNERS, "search_short", lambda stage, ctx, d, p: {"spec": "nowhere.json"})
    with pytest.raises(LongRopeError, match=r"final spec .*nowhere\.json does not exist"):
        progressive.extend(None, tmp_path / "out", plan=plan, progress=False)


def test_extends_dtype_reaches_each_search_unless_the_stage_sets_its_own():
    from longrope.recipes.plan import search_config

    plan = parse_plan(plan_with(lambda d: d["stages"][2].update(dtype="bf16")))
    searches = [s for s in plan.stages if s.kind == "search"]
    assert search_config(searches[0], plan, {"dtype": "fp32"}).dtype == "fp32"  # extend --dtype fp32
    assert search_config(searches[1], plan, {"dtype": "fp32"}).dtype == "bf16"  # the stage's own wins
    assert search_config(searches[0], plan).dtype == "auto"
