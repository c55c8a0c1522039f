"""What a command tells the user when Ctrl-C stops it: what was saved and the exact command that continues.

A long command wraps its work in ``on_interrupt("...")``: a ``KeyboardInterrupt`` leaving the block carries
the message (the innermost block's wins), and the CLI entry point prints it (exit status 130, as a shell
expects), never a traceback.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
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


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside this block until the block ends, then raise it.

    For writes that must happen together (a log line and the state that counts it): a Ctrl-C between them
    would throw away finished work on resume. Only the main thread can take signals; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def interrupt_message(exc: KeyboardInterrupt) -> str:
    """The message a command attached to ``exc`` (a plain one if none did)."""
    return getattr(exc, "longrope_message", None) or NOTHING_SAVED


def rerun_command(add: str | None = None, drop: tuple[str, ...] = ()) -> str:
    """This process's ``longrope ...`` command line, quoted for a shell, with ``add`` appended if missing."""
    args = [a for a in sys.argv[1:] if a not in drop]
    if add is not None and add not in args:
        args.append(add)
    return shlex.join(["longrope", *args])
