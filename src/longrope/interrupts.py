"""What a command tells the user when Ctrl-C stops it: what was saved and the exact command that continues.

A long command wraps its work in ``on_interrupt("...")``: a ``KeyboardInterrupt`` leaving the block carries
the message (the innermost block's wins), and the CLI entry point prints it (exit status 130, as a shell
expects), never a traceback. SIGTERM (``kill``, a batch scheduler, a container stop) is handled the same way
inside `sigterm_interrupts`: it raises ``KeyboardInterrupt``, so the same save-on-interrupt paths run,
and `interrupt_status` is 143 (128 + 15) instead.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

NOTHING_SAVED = "nothing was saved"
_received: list[int] = []  # signals turned into KeyboardInterrupt by `_raise_interrupt`, in order


def _raise_interrupt(signum: int, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside this block SIGTERM raises ``KeyboardInterrupt`` in the main thread, as Ctrl-C does (elsewhere a
    no-op); the previous handler is put back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()  # a new command: an earlier one's signal (in this process) is not this one's
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_status() -> int:
    """The exit status for a run stopped by an interrupt: 128 + the signal's number (130 for Ctrl-C)."""
    return 128 + (_received[0] if _received else signal.SIGINT)


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
    """Hold a Ctrl-C (or a SIGTERM made to interrupt) that arrives inside this block until the block ends, then
    raise it.

    For writes that must happen together (a log line and the state that counts it): a Ctrl-C between them
    would throw away finished work on resume. Only the main thread can take signals; elsewhere a no-op, and so
    for a signal whose handler does not raise ``KeyboardInterrupt`` (a shell's background job ignores SIGINT).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signum: handler for signum in (signal.SIGINT, signal.SIGTERM)
            if (handler := signal.getsignal(signum)) in (signal.default_int_handler, _raise_interrupt)}
    caught: list[int] = []
    for signum in held:
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)
    if caught:
        held[caught[0]](caught[0], None)  # the handler itself raises, and records a SIGTERM


def interrupt_message(exc: KeyboardInterrupt) -> str:
    """The message a command attached to ``exc`` (a plain one if none did)."""
    return getattr(exc, "longrope_message", None) or NOTHING_SAVED


def rerun_command(add: str | None = None, drop: tuple[str, ...] = ()) -> str:
    """This process's ``longrope ...`` command line, quoted for a shell, with ``add`` appended if missing."""
    args = [a for a in sys.argv[1:] if a not in drop]
    if add is not None and add not in args:
        args.append(add)
    return shlex.join(["longrope", *args])
