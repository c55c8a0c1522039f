"""``longrope presets``: list the shipped presets, or show one (`longrope.rope.presets`)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from longrope.rope.preset_files import preset_names
from longrope.rope.presets import load_preset

console = Console(soft_wrap=True)


def presets_table() -> Table:
    """One row per shipped preset: its model, window -> target, method and the summary of its figures
    (`longrope presets NAME` shows them all)."""
    table = Table(title="Shipped presets (use the name wherever a spec file is accepted)")
    for column in ("name", "model", "window", "target", "method", "measured (test data)"):
        table.add_column(column)
    for name in preset_names():
        preset = load_preset(name)
        header = preset.header
        table.add_row(name, str(header.get("model", "?")).split(" (")[0], str(preset.geometry.original_window),
                      str(header.get("target_length", "?")), preset.spec.method, str(header.get("summary", "")))
    return table


def presets_command(
    name: str | None = typer.Argument(None, help="A preset to show in full (header and spec)."),
) -> None:
    """List the searched specs shipped with longrope; `--method NAME`, `--spec NAME` and `load_spec(NAME)` take them.

    A preset only loads on a model with the rotary geometry it was searched for (dimension, rope_theta, window).
    """
    if name is None:
        console.print(presets_table())
        return
    preset = load_preset(name)
    console.print_json(json.dumps({"name": preset.name, "geometry": vars(preset.geometry), "header": preset.header,
                                   "spec": preset.spec.to_dict()}))


def register(app: typer.Typer) -> None:
    app.command("presets")(presets_command)
