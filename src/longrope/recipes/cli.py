"""``longrope extend`` and ``longrope demo``: thin layers over `longrope.recipes.extend` / `run_demo`."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import typer
from rich.console import Console

from longrope.interrupts import on_interrupt, rerun_command
from longrope.locks import output_lock
from longrope.recipes.demo import DemoSettings, demo_search, demo_table, run_demo
from longrope.validation import check_number, check_output_dir

console = Console()


def extend_command(
    plan: Path | None = typer.Argument(None, help="TOML plan (default: the shipped plan for the tiny model)."),
    out: Path = typer.Option(Path("extend-out"), "--out", help="Output directory (one sub-directory per stage)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip finished stages, resume the current one."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress display."),
) -> None:
    """Progressive extension from a plan: search -> fine-tune -> search again -> short factors -> export.

    Each stage writes --out/NN-kind/ and a DONE marker; re-running the same command after an interruption
    skips finished stages and resumes the one that was running.
    """
    from longrope.recipes.plan import load_plan
    from longrope.recipes.progressive import extend

    loaded_plan = load_plan(plan)  # a bad plan or --out fails here, before the first stage
    out = check_output_dir("--out", out)
    hint = (f"extension interrupted; finished stages are kept in {out} (a DONE marker each); continue with: "
            f"{rerun_command(drop=('--no-resume',))}")
    with output_lock(out), on_interrupt(hint):
        final = extend(plan, out, resume=resume, progress=progress, plan=loaded_plan)
    console.print(f"final spec: {final}")


def demo_command(
    out: Path = typer.Option(Path("longrope-demo"), help="Where tables, JSON and plots go."),
    generations: int = typer.Option(demo_search().generations, help="Search generations (the budget)."),
    eval_docs: int = typer.Option(DemoSettings().eval_docs, help="Test documents per perplexity point."),
    trials: int = typer.Option(DemoSettings().passkey_trials, help="Passkey trials per length."),
    seed: int = typer.Option(0, help="Seed of the search and of the evaluation samples."),
) -> None:
    """Run the whole story on the built-in tiny model: search LongRoPE factors at 8x, then compare none, PI,
    NTK, dynamic NTK, YaRN and the searched factors (perplexity and passkey on the test split) at 1x, 2x, 4x, 8x.
    Writes ./longrope-demo/ (demo.md, demo.json, ppl/, passkey/, search/)."""
    check_output_dir("--out", out)
    check_number("--generations", generations, minimum=0)
    check_number("--eval-docs", eval_docs, minimum=1)
    check_number("--trials", trials, minimum=1)
    settings = DemoSettings(search=dataclasses.replace(demo_search(), generations=generations, seed=seed),
                            eval_docs=eval_docs, passkey_trials=trials)
    result = run_demo(out, settings)
    out_console = Console()
    if not out_console.is_terminal:  # a log has no width: rich's 80-column default would truncate the table
        out_console = Console(width=160)
    out_console.print(demo_table(result))
    out_console.print(f"written to {result.out_dir}/ (demo.md, demo.json, ppl/ppl.png, search/convergence.png); "
                      f"times: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))


def register_extend(app: typer.Typer) -> None:
    app.command("extend")(extend_command)


def register_demo(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
