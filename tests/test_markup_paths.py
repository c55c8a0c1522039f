"""Paths the user chose are printed as they are: an ``--out`` whose name holds rich markup (``[/]``,
``[bold]x[/bold]``) neither crashes a command (``MarkupError``) nor loses its brackets, and a long path stays on
one line (rich would wrap it at 80 columns in a pipe), so what is printed names the file that was written.

Real commands on a tiny random model (search, eval ppl, export); finetune, extend and demo with their work
replaced by stand-ins (their printing is what is tested here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from factories import save_tiny_hf_dir
from typer.testing import CliRunner

from longrope.cli import app
from longrope.rope import LinearSpec, LongRopeSpec, YarnSpec, save_spec

MARKUP = "o[/]p [bold]x[/bold] [red]"  # "o[" / "]p [bold]x[" / "bold] [red]": three directories


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny forwards: no OpenMP spinning on a busy 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_hf_dir(tmp_path_factory.mktemp("markup-model"))


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("markup-docs")
    for i in range(3):
        (root / f"m{i}.py").write_text("".join(f"def f_{j}(x):\n    return x + {i * j}\n" for j in range(60)))
    return root


def weird(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"{name}-{MARKUP}"


def invoke(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_search_prints_the_paths_it_wrote(model_dir, docs, tmp_path):
    out = weird(tmp_path, "search")
    output = invoke("search", "--model", model_dir, "--factor", 2, "--population", 3, "--parents", 2,
                    "--mutations", 1, "--crossovers", 1, "--generations", 0, "--docs", 1, "--corpus", docs,
                    "--dtype", "fp32", "--no-progress", "--out", out)
    assert (out / "best_spec.json").is_file()
    assert f"spec: {out / 'best_spec.json'}" in output


def test_eval_prints_its_report_paths_and_the_replace_note(model_dir, docs, tmp_path):
    out = weird(tmp_path, "ppl")
    args = ["eval", "ppl", "--model", model_dir, "--method", "none", "--lengths", "1x", "--n-docs", 1,
            "--corpus", docs, "--dtype", "fp32", "--quiet", "--out", out]
    output = invoke(*args)
    assert (out / "ppl.json").is_file() and str(out / "ppl.json") in output
    output = invoke(*args)  # again: the note names the report it will replace
    assert f"note: {out / 'ppl.json'} exists and will be replaced" in output


def test_export_prints_the_directory_it_wrote(model_dir, tmp_path):
    out = weird(tmp_path, "export")
    spec = save_spec(YarnSpec(factor=2.0), tmp_path / "spec.json")
    output = invoke("export", model_dir, "--spec", spec, "--out", out)
    assert (out / "config.json").is_file() and f"wrote {out} (rope_type yarn" in output


def test_finetune_prints_the_model_directory(tmp_path, monkeypatch):
    from longrope.train import finetuning

    monkeypatch.setattr("longrope.models.loading.load_model", lambda name, dtype="float32", device="cpu": (None, None))
    monkeypatch.setattr(finetuning, "finetune", lambda model, tok, spec, config, out, resume, progress: out / "model")
    out = weird(tmp_path, "finetune")
    spec = save_spec(LinearSpec(factor=2.0), tmp_path / "spec.json")
    output = invoke("finetune", "--spec", spec, "--length", 64, "--steps", 1, "--no-progress", "--out", out)
    assert f"fine-tuned model: {out / 'model'}" in output


def test_extend_prints_its_stages_and_final_spec(tmp_path, monkeypatch):
    from longrope.recipes import progressive

    def search_stage(stage, ctx, stage_dir: Path, progress):
        save_spec(LongRopeSpec(long_factor=[2.0] * 4, factor=2.0), stage_dir / "best_spec.json")
        return {"spec": "best_spec.json"}

    monkeypatch.setattr(progressive, "STAGE_RUNNERS", {"search": search_stage})
    monkeypatch.setattr(progressive, "preflight", lambda ctx, pending: None)
    plan = tmp_path / "plan.toml"
    plan.write_text('[model]\nname = "tiny"\n\n[[stages]]\nkind = "search"\nfactor = 2\ncorpus = "[bold]c[/]"\n')
    out = weird(tmp_path, "extend")
    output = invoke("extend", plan, "--out", out)  # progress on: the stage lines are printed too
    assert f"final spec: {out / '01-search' / 'best_spec.json'}" in output
    assert '"corpus": "[bold]c[/]"' in output
    output = invoke("extend", plan, "--out", out)
    assert "01-search: done already, skipped" in output


def test_demo_prints_where_it_wrote(tmp_path, monkeypatch):
    from longrope.recipes import cli as recipes_cli
    from longrope.recipes.demo import DemoResult

    def fake_demo(out, settings, fit, time_limit):
        return DemoResult(Path(out), {"none": {32: 3.0}}, {"none": {32: 1.0}}, [32], LinearSpec(factor=2.0),
                          {"search": 1.0})

    monkeypatch.setattr(recipes_cli, "run_demo", fake_demo)
    out = weird(tmp_path, "demo")
    assert f"written to {out}/ (demo.md" in invoke("demo", "--out", out)


def test_a_method_named_by_its_spec_file_is_shown_as_written(model_dir, docs, tmp_path):
    """The table's method name is the spec file's stem: markdown (`*`, `|`, `[...]`) and matplotlib's mathtext
    (`$...$`) in it are shown literally, in the printed table, the markdown file and the plot."""
    name = "*my|spec* [v2] $x$"
    spec = save_spec(LinearSpec(factor=2.0), tmp_path / f"{name}.json")
    out = tmp_path / "named"
    output = invoke("eval", "ppl", "--model", model_dir, "--method", spec, "--lengths", "1x", "--n-docs", 1,
                    "--corpus", docs, "--dtype", "fp32", "--quiet", "--out", out)
    assert name in output
    assert r"\*my\|spec\* \[v2\] \$x\$" in (out / "ppl.md").read_text()
    assert (out / "ppl.png").stat().st_size > 0
