"""The ``longrope`` command: one typer app; each area adds its own sub-commands from its ``cli`` module.

Every command is a thin layer over a documented Python function of the library.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer
from rich.console import Console
from rich.markup import escape

from longrope.failures import DEBUG_ENV, debug_enabled, describe, internal_error
from longrope.interrupts import interrupt_message, interrupt_status, sigterm_interrupts

app = typer.Typer(
    name="longrope",
    help="Extend the context window of RoPE language models, search LongRoPE factors, and measure the result.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True, soft_wrap=True)  # one line per error, also in logs and pipes


def _print_version(value: bool) -> None:
    if value:
        from longrope import versions

        found = versions()
        typer.echo(f"longrope {found.pop('longrope')} (" + ", ".join(f"{k} {v}" for k, v in found.items()) + ")")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the versions of longrope, torch, transformers and python, and exit."),
    debug: bool = typer.Option(False, "--debug", help=f"Print the traceback of any failure (as {DEBUG_ENV}=1)."),
) -> None:
    """Extend the context window of RoPE language models, search LongRoPE factors, and measure the result."""
    if debug:
        os.environ[DEBUG_ENV] = "1"  # one switch, also seen by the processes a command starts


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
    err_console.print("[bold yellow]interrupted:[/]", escape(interrupt_message(exc)))
    sys.exit(interrupt_status())


def _report_failure(exc: Exception) -> None:
    failure = describe(exc) or internal_error(exc)
    if debug_enabled():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    # Printed as text: paths and hints such as `longrope[datasets]` contain brackets.
    err_console.print(f"[bold red]{failure.label}:[/]", escape(failure.text))
    sys.exit(failure.status)


def main() -> None:
    """Console entry point: every failure is one line on stderr, never a traceback (`longrope.failures` says
    which, and the exit status: 2 bad input, 1 the environment or a bug); Ctrl-C and SIGTERM say what was saved
    and how to continue (exit status 130 and 143)."""
    try:
        with sigterm_interrupts():
            app()
    except SystemExit as exc:  # typer turns Ctrl-C into exit 130; the KeyboardInterrupt is in the chain
        interrupt = _keyboard_interrupt_in(exc)
        if interrupt is None:
            raise
        _report_interrupt(interrupt)
    except KeyboardInterrupt as exc:
        _report_interrupt(exc)
    except Exception as exc:  # noqa: BLE001 - the one boundary: expected failures and bugs alike get one line
        _report_failure(exc)


if __name__ == "__main__":
    main()
