"""What a command tells the user when Ctrl-C stops it: what was saved and the exact command that continues.

A long command wraps its work in ``on_interrupt("...")``: a ``KeyboardInterrupt`` leaving the block carries
the message (the innermost block's wins), and the CLI entry point prints it (exit status 130, as a shell
expects), never a traceback.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager

NOTHING_SAVED = "nothing was saved"


@contextmanager
def on_interrupt(message: str) -> Iterator[None]:
    """Attach ``message`` to a Ctrl-C that arrives inside this block (unless an inner block already did)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if not getattr(exc, "longrope_message", None):
            exc.longrope_message = message
        raise


def interrupt_message(exc: KeyboardInterrupt) -> str:
    """The message a command attached to ``exc`` (a plain one if none did)."""
    return getattr(exc, "longrope_message", None) or NOTHING_SAVED


def rerun_command(add: str | None = None, drop: tuple[str, ...] = ()) -> str:
    """This process's ``longrope ...`` command line, quoted for a shell, with ``add`` appended if missing."""
    args = [a for a in sys.argv[1:] if a not in drop]
    if add is not None and add not in args:
        args.append(add)
    return shlex.join(["longrope", *args])
