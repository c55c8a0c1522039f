"""The ``longrope`` command: one typer app; each area adds its own sub-commands from its ``cli`` module.

Every command is a thin layer over a documented Python function of the library.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from longrope.errors import LongRopeError

app = typer.Typer(
    name="longrope",
    help="Extend the context window of RoPE language models, search LongRoPE factors, and measure the result.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True, soft_wrap=True)  # one line per error, also in logs and pipes


@app.callback()
def _root() -> None:
    """Extend the context window of RoPE language models, search LongRoPE factors, and measure the result."""


def _register() -> None:
    # Each area owns its commands; imported here, not at module top, so `app` exists before they attach.
    from longrope.eval.cli import eval_app
    from longrope.export import cli as export_cli
    from longrope.models import info
    from longrope.presets import cli as presets_cli
    from longrope.recipes import cli as recipes_cli
    from longrope.search import cli as search_cli
    from longrope.train import cli as train_cli

    # Listed in the order `longrope --help` shows them.
    for register in (info.register, search_cli.register, train_cli.register, recipes_cli.register_extend,
                     export_cli.register, presets_cli.register, recipes_cli.register_demo):
        register(app)
    app.add_typer(recipes_cli.tiny_app, name="tiny")
    app.add_typer(eval_app, name="eval")


_register()


def _keyboard_interrupt_in(exc: BaseException) -> KeyboardInterrupt | None:
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _report_interrupt(exc: KeyboardInterrupt) -> None:
    from longrope.interrupts import interrupt_message

    err_console.print("[bold yellow]interrupted:[/]", escape(interrupt_message(exc)))
    sys.exit(130)


def main() -> None:
    """Console entry point: user errors become one red line and exit code 2, never a traceback; Ctrl-C says
    what was saved and how to continue (exit code 130)."""
    try:
        app()
    except SystemExit as exc:  # typer turns Ctrl-C into exit 130; the KeyboardInterrupt is in the chain
        interrupt = _keyboard_interrupt_in(exc)
        if interrupt is None:
            raise
        _report_interrupt(interrupt)
    except KeyboardInterrupt as exc:
        _report_interrupt(exc)
    except (LongRopeError, OSError) as exc:  # OSError: a path that cannot be read or written
        # The message is printed as text: paths and hints such as `longrope[datasets]` contain brackets.
        err_console.print("[bold red]error:[/]", escape(str(exc)))
        sys.exit(2)


if __name__ == "__main__":
    main()
