"""The ``longrope`` command: one typer app; each area adds its own sub-commands from its ``cli`` module.

Every command is a thin layer over a documented Python function of the library.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from longrope.errors import LongRopeError

app = typer.Typer(
    name="longrope",
    help="Extend the context window of RoPE language models, search LongRoPE factors, and measure the result.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Extend the context window of RoPE language models, search LongRoPE factors, and measure the result."""

# (module, attribute, name): sub-apps registered as `longrope NAME ...`; commands registered on `app` directly
# by modules listed in _COMMAND_MODULES.
_SUB_APPS = [
    ("longrope.models.cli", "tiny_app", "tiny"),
    ("longrope.eval.cli", "eval_app", "eval"),
]
_COMMAND_MODULES = [
    "longrope.models.info",
    "longrope.search.cli",
    "longrope.train.cli",
    "longrope.export.cli",
    "longrope.demo",
]


def _register() -> None:
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    for module_name, attr, name in _SUB_APPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        sub = getattr(module, attr, None)
        if sub is not None:
            app.add_typer(sub, name=name)


_register()


def main() -> None:
    """Console entry point: user errors become one red line and exit code 2, never a traceback."""
    try:
        app()
    except LongRopeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except (FileNotFoundError, PermissionError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
