"""``longrope tiny ...``: build and inspect the built-in tiny Llama."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from longrope.errors import LongRopeError
from longrope.models.shipped import shipped_tiny_path
from longrope.models.tiny import (
    TinyConfig,
    ensure_tiny,
    is_complete,
    tiny_metrics,
    tiny_path,
    train_tiny,
    with_steps,
)

tiny_app = typer.Typer(
    help="The built-in tiny Llama trained on the Python standard library. It ships with the package "
    "(`--model tiny` everywhere); `longrope tiny train` rebuilds the same recipe from scratch into the cache.",
    no_args_is_help=True,
)
console = Console()


def _config(test_size: bool, steps: int | None) -> TinyConfig:
    config = TinyConfig.test() if test_size else TinyConfig.default()
    return with_steps(config, steps) if steps is not None else config


def metrics_table(path: Path) -> Table:
    """A table of the marker's figures: size, training time and validation perplexities."""
    marker = tiny_metrics(path)
    metrics = marker["metrics"]
    window = marker["config"]["window"]
    table = Table(title=f"tiny model {marker['config']['name']}", show_header=True)
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
) -> None:
    """Rebuild the tiny model (tokenizer + Llama) from scratch into the cache and print its metrics.

    The shipped model (`--model tiny`) is not touched. The rebuilt one is loaded by its name,
    `--model tiny-stdlib` (`tiny-stdlib-stepsN` with --steps N), or by the directory printed at the end.
    The default recipe takes about an hour on 2 CPU cores; a killed build leaves no half-written model.
    """
    config = _config(test_size, steps)
    path = (
        train_tiny(config, tiny_path(config), progress=True) if force else ensure_tiny(config, progress=True)
    )
    console.print(f"model directory: {path}")
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
    console.print(f"model directory: {path}")
    console.print(metrics_table(path))
