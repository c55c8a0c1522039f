"""How the ``longrope`` command reports a failure: one line that says what went wrong and what to do, and an
exit status that tells a script whose fault it was.

- 2, bad input: `LongRopeError`, a path that does not exist or is of the wrong kind, a file that cannot be
  parsed (JSON, TOML, text that is not UTF-8, nesting too deep);
- 1, the environment failed: `EnvironmentFailure`, a full disk, a permission, a read-only file system, the
  network, memory (the same command may work elsewhere or later);
- 1, an internal error (a bug): the line names the exception and the file its traceback was saved to;
- 130 / 143, Ctrl-C / SIGTERM: `longrope.interrupts`.

``LONGROPE_DEBUG=1`` (or ``longrope --debug``) prints the traceback as well, for every failure.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from longrope.errors import EnvironmentFailure, LongRopeError
from longrope.interrupts import rerun_command
from longrope.paths import CACHE_ENV, cache_root

DEBUG_ENV = "LONGROPE_DEBUG"
BAD_INPUT = 2
ENVIRONMENT = 1
INTERNAL = 1  # what Python itself exits with on an uncaught exception

_WRITE_ELSEWHERE = f"write to another location (--out, {CACHE_ENV})"
# errno -> what to do; an OSError with one of these is the machine's failure, any other one a bad path.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: f"free some disk space or {_WRITE_ELSEWHERE}",
    errno.EDQUOT: f"free some of your disk quota or {_WRITE_ELSEWHERE}",
    errno.EROFS: f"the file system is read-only: {_WRITE_ELSEWHERE}",
    errno.EACCES: f"check the permissions, or {_WRITE_ELSEWHERE}",
    errno.EPERM: f"check the permissions, or {_WRITE_ELSEWHERE}",
    errno.EMFILE: "raise the limit of open files (ulimit -n)",
    errno.ENFILE: "too many files are open on this machine; try again later",
    errno.EIO: "the disk or network file system failed; check it and try again",
    errno.ENOMEM: "free some memory, or use a smaller model, batch or length",
}
# Libraries that write files report a full disk in their own exception types (torch.save a RuntimeError,
# safetensors a SafetensorError): recognised by the operating system's words in the message.
DISK_FULL_WORDS = ("No space left on device", "StorageFull", "Disk quota exceeded")
OUT_OF_MEMORY = "use a smaller model, batch or length, or a machine with more memory"


@dataclass(frozen=True)
class Failure:
    """What to print (one line, with its label) and the exit status."""

    status: int
    label: str
    message: str

    @property
    def text(self) -> str:
        return one_line(self.message)


def one_line(text: str) -> str:
    """``text`` with its line breaks turned into ``; `` (a message is one line in a log, whatever it holds)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < 16:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _os_message(exc: OSError) -> str:
    if exc.strerror is None:  # raised with a message of its own
        return str(exc)
    where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    return f"{where}: {exc.strerror}" if where else exc.strerror


def _environment_failure(exc: BaseException) -> Failure | None:
    """``exc`` as a failure of the machine, or None when it is not one."""
    if isinstance(exc, MemoryError):
        return Failure(ENVIRONMENT, "error", f"out of memory; {OUT_OF_MEMORY}")
    if type(exc).__name__ == "OutOfMemoryError":  # torch's, on an accelerator (not imported here: it is slow)
        return Failure(ENVIRONMENT, "error", f"out of accelerator memory ({one_line(exc)[:200]}); {OUT_OF_MEMORY}")
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        return Failure(ENVIRONMENT, "error", f"{_os_message(exc)}; {ENVIRONMENT_ERRNOS[exc.errno]}")
    if isinstance(exc, PermissionError):  # raised with a message and no errno (`longrope.paths.cache_dir`)
        return Failure(ENVIRONMENT, "error", str(exc))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return Failure(ENVIRONMENT, "error", f"{_os_message(exc)}; check the network and try again")
    if not isinstance(exc, OSError) and any(word in str(exc) for word in DISK_FULL_WORDS):
        return Failure(ENVIRONMENT, "error",
                       f"the disk is full ({type(exc).__name__}: {one_line(exc)[:200]}); "
                       f"{ENVIRONMENT_ERRNOS[errno.ENOSPC]}")
    return None


def describe(exc: BaseException) -> Failure | None:
    """The line and exit status of an expected failure; None for an unexpected one (a bug)."""
    if isinstance(exc, EnvironmentFailure):
        return Failure(ENVIRONMENT, "error", str(exc))
    if isinstance(exc, LongRopeError):
        return Failure(BAD_INPUT, "error", str(exc))
    for cause in _chain(exc):  # a full disk or a failed allocation, also when a library wrapped it in its own type
        failure = _environment_failure(cause)
        if failure is not None:
            return failure
    if isinstance(exc, OSError):  # a path that does not exist, is a directory, ...
        return Failure(BAD_INPUT, "error", _os_message(exc))
    # Parse errors of a file the user gave that were not translated where it was read: no file name here.
    if isinstance(exc, UnicodeDecodeError):
        return Failure(BAD_INPUT, "error", f"a file given is not UTF-8 text ({exc}); check the files named")
    if isinstance(exc, json.JSONDecodeError) or type(exc).__name__ == "TOMLDecodeError":  # tomllib or tomli
        kind = "JSON" if isinstance(exc, json.JSONDecodeError) else "TOML"
        return Failure(BAD_INPUT, "error", f"a file given is not valid {kind} ({exc}); check the files named")
    if isinstance(exc, RecursionError):
        return Failure(BAD_INPUT, "error", "a file given is nested too deeply to read; check the files named")
    return None


def save_traceback(exc: BaseException) -> Path:
    """Write ``exc``'s traceback, the command line and the versions to a new file under
    ``$LONGROPE_CACHE/crash/`` (the temporary directory when that fails); return its path."""
    from longrope import versions

    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = "".join([
        f"command: {rerun_command()}\n",
        f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + f", platform {platform.platform()}\n\n",
        *traceback.format_exception(type(exc), exc, exc.__traceback__),
    ])
    error = OSError("no directory to write to")
    for directory in (cache_root() / "crash", Path(tempfile.gettempdir()) / "longrope-crash"):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"crash-{stamp}-{os.getpid()}.txt"
            path.write_text(text)
            return path
        except OSError as exc_write:
            error = exc_write
    raise error


def internal_error(exc: BaseException) -> Failure:
    """The line for an unexpected exception: its type and message, and where its traceback went."""
    what = f"{type(exc).__name__}: {one_line(exc)}" if str(exc) else type(exc).__name__
    try:
        saved = f"full traceback saved to {save_traceback(exc)}"
    except Exception as write_error:  # noqa: BLE001 - the report of a bug must not fail in turn
        saved = f"its traceback could not be saved ({write_error}); rerun with {DEBUG_ENV}=1 to see it"
    return Failure(INTERNAL, "internal error", f"{what}; {saved}; please report it")
