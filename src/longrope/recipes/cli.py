"""``longrope extend``, ``longrope demo`` and ``longrope tiny``: thin layers over `longrope.recipes.extend`,
`run_demo` and the tiny model's build (`longrope.recipes.tiny`)."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from longrope.errors import LongRopeError
from longrope.interrupts import on_interrupt, rerun_command
from longrope.locks import output_lock
from longrope.models.shipped import shipped_tiny_path
from longrope.models.tiny import TinyConfig, is_complete, tiny_metrics, tiny_path, with_steps
from longrope.precision_options import DeviceOpt, DtypeOpt, check_precision
from longrope.recipes.demo import TIME_LIMIT, DemoSettings, demo_search, demo_table, run_demo
from longrope.recipes.tiny import ensure_tiny, train_tiny
from longrope.validation import check_number, check_output_dir

console = Console()


def extend_command(
    plan: Path | None = typer.Argument(None, help="TOML plan (default: the shipped plan for the tiny model)."),
    out: Path = typer.Option(Path("extend-out"), "--out", help="Output directory (one sub-directory per stage)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip finished stages, resume the current one."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress display."),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Progressive extension from a plan: search -> fine-tune -> search again -> short factors -> export.

    --dtype is the searches' and the scoring's compute dtype where a stage sets none; fine-tuning keeps the
    plan's [model] dtype as its weights.

    Each stage writes --out/NN-kind/ and a DONE marker; re-running the same command after an interruption
    skips finished stages and resumes the one that was running.
    """
    from longrope.recipes.plan import load_plan
    from longrope.recipes.progressive import extend

    loaded_plan = load_plan(plan)  # a bad plan or --out fails here, before the first stage
    out = check_output_dir("--out", out)
    check_precision(device, loaded_plan.dtype)  # the fine-tuning weights' dtype: warned if slow here
    check_precision(device, dtype)
    hint = (f"extension interrupted; finished stages are kept in {out} (a DONE marker each); continue with: "
            f"{rerun_command(drop=('--no-resume',))}")
    with output_lock(out), on_interrupt(hint):
        final = extend(plan, out, resume=resume, progress=progress, plan=loaded_plan, device=device, dtype=dtype)
    console.print(f"final spec: {final}", markup=False, soft_wrap=True)  # a path may hold brackets


def demo_command(
    out: Path = typer.Option(Path("longrope-demo"), help="Where tables, JSON and plots go."),
    generations: int | None = typer.Option(
        None, help=f"Search generations (the budget; default {demo_search().generations}, fewer where the machine "
        "is too slow, unless --full)."),
    eval_docs: int | None = typer.Option(
        None, help=f"Test documents per perplexity point (default {DemoSettings().eval_docs}, fitted likewise)."),
    trials: int | None = typer.Option(
        None, help=f"Passkey trials per length (default {DemoSettings().passkey_trials}, fitted likewise)."),
    seed: int = typer.Option(0, help="Seed of the search and of the evaluation samples."),
    full: bool = typer.Option(False, "--full", help="Run the full budget however long this machine takes."),
    time_limit: float = typer.Option(TIME_LIMIT, "--time-limit", help="Seconds the demo may take before it fits "
                                     "a smaller budget (measured first: one forward per length)."),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Run the whole story on the built-in tiny model: search LongRoPE factors at 8x, then compare none, PI,
    NTK, dynamic NTK, YaRN and the searched factors (perplexity and passkey on the test split) at 1x, 2x, 4x, 8x.
    Writes ./longrope-demo/ (demo.md, demo.json, ppl/, passkey/, search/). On a machine too slow for the full
    budget in --time-limit seconds it measures that first and runs a smaller budget (printed; --full for all)."""
    check_output_dir("--out", out)
    check_number("--generations", generations, minimum=0)
    check_number("--eval-docs", eval_docs, minimum=1)
    check_number("--trials", trials, minimum=1)
    check_number("--time-limit", time_limit, above=0)
    check_precision(device, dtype)
    defaults = DemoSettings()
    settings = DemoSettings(
        search=dataclasses.replace(demo_search(), seed=seed,
                                   generations=defaults.search.generations if generations is None else generations),
        eval_docs=defaults.eval_docs if eval_docs is None else eval_docs,
        passkey_trials=defaults.passkey_trials if trials is None else trials, device=device, dtype=dtype)
    # A budget the user set by hand is what they asked for: no fitting.
    fit = not full and generations is None and eval_docs is None and trials is None
    result = run_demo(out, settings, fit=fit, time_limit=time_limit)
    out_console = Console()
    if not out_console.is_terminal:  # a log has no width: rich's 80-column default would truncate the table
        out_console = Console(width=160)
    out_console.print(demo_table(result))
    out_console.print(f"written to {result.out_dir}/ (demo.md, demo.json, ppl/ppl.png, search/convergence.png); "
                      f"times: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
                      markup=False, soft_wrap=True)


def register_extend(app: typer.Typer) -> None:
    app.command("extend")(extend_command)


def register_demo(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


# -- longrope tiny -----------------------------------------------------------------------------------------------

tiny_app = typer.Typer(
    help="The built-in tiny Llama trained on the Python standard library. It ships with the package "
    "(`--model tiny` everywhere); `longrope tiny train` rebuilds the same recipe from scratch into the cache.",
    no_args_is_help=True,
)


def _config(test_size: bool, steps: int | None) -> TinyConfig:
    config = TinyConfig.test() if test_size else TinyConfig.default()
    return with_steps(config, steps) if steps is not None else config


def metrics_table(path: Path) -> Table:
    """A table of the marker's figures: size, training time and validation perplexities."""
    marker = tiny_metrics(path)
    metrics = marker["metrics"]
    window = marker["config"]["window"]
    table = Table(title=escape(f"tiny model {marker['config']['name']}"), show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{marker['parameters'] / 1e6:.2f}M")
    table.add_row(
        "training time", f"{marker['train_seconds']:.0f} s ({marker['total_seconds']:.0f} s in all)"
    )
    table.add_row("tokens seen", f"{marker['train_tokens_seen']:,}")
    table.add_row(
        f"val ppl in window ({window}, {metrics['validation_windows']} windows)",
        f"{metrics['ppl_in_window']:.1f}",
    )
    table.add_row("val ppl, unigram model", f"{metrics['ppl_unigram']:.1f}")
    for key, value in metrics.items():
        if key.startswith(("ppl_first_", "ppl_last_")):
            table.add_row(f"val ppl, {key[4:].replace('_', ' ')} positions", f"{value:.1f}")
    if "bits_per_char" in metrics:
        table.add_row(f"val bits per character ({metrics['bits_per_char_spans']})", f"{metrics['bits_per_char']:.3f}")
    for template, accuracy in metrics.get("passkey_in_window", {}).items():
        table.add_row(f"passkey at {window} ({template} template)", f"{100 * accuracy:.0f}%")
    for length, value in metrics["ppl_by_length_no_scaling"].items():
        scale = int(length) // window
        table.add_row(
            f"val ppl at {length} ({scale}x, no scaling, {metrics['long_documents']} docs)", f"{value:.1f}"
        )
    return table


@tiny_app.command()
def train(
    force: bool = typer.Option(False, "--force", help="Retrain even if a finished model is cached."),
    steps: int | None = typer.Option(
        None, "--steps", help="Training steps (the model is cached under its own name)."
    ),
    test_size: bool = typer.Option(
        False, "--test-size", help="The much smaller model used by tests (seconds)."
    ),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Rebuild the tiny model (tokenizer + Llama) from scratch into the cache and print its metrics.

    The shipped model (`--model tiny`) is not touched. The rebuilt one is loaded by its name,
    `--model tiny-stdlib` (`tiny-stdlib-stepsN` with --steps N), or by the directory printed at the end.
    It takes about 30 minutes on 2 CPU cores; a killed build resumes from its last checkpoint and never leaves
    a half-written model. --dtype is the autocast dtype of the model's body (weights, head and loss stay fp32);
    `auto` on a CPU is how the shipped model was built.
    """
    check_precision(device, dtype)
    config = _config(test_size, steps)
    path = (
        train_tiny(config, tiny_path(config), progress=True, device=device, dtype=dtype) if force
        else ensure_tiny(config, progress=True, device=device, dtype=dtype)
    )
    console.print(f"model directory: {path}", markup=False, soft_wrap=True)
    console.print(metrics_table(path))


@tiny_app.command()
def info(
    built: bool = typer.Option(
        False, "--built", help="The model rebuilt by `longrope tiny train`, not the shipped one."
    ),
    steps: int | None = typer.Option(None, "--steps", help="The rebuilt variant trained with --steps N."),
    test_size: bool = typer.Option(False, "--test-size", help="The rebuilt test-size model."),
) -> None:
    """Print where the tiny model is (shipped, or with --built the cached rebuild) and its metrics."""
    if not (built or steps is not None or test_size):
        path = shipped_tiny_path()
    else:
        path = tiny_path(_config(test_size, steps))
        if not is_complete(path):
            raise LongRopeError(f"the tiny model is not built yet ({path}); run: longrope tiny train")
    console.print(f"model directory: {path}", markup=False, soft_wrap=True)
    console.print(metrics_table(path))
