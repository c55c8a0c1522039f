"""One writer per output directory: a lock file beside it, naming the process that holds it.

Two searches (or two ``--resume`` runs) on one ``--out`` would interleave their logs and disagree about the best
result; a long command takes ``output_lock(out)`` first, and a second one stops at once with a message naming the
holder. The lock is the hidden sibling ``.NAME.lock`` (so it also guards a directory that does not exist yet or
is replaced as a whole, as an export is). The lock is keyed by the resolved path, so an ``--out`` reached through
a symbolic link takes the same lock as its target.

A lock is taken over only when its holder is provably gone: the file names a process id on this machine and no
such process runs. One from another machine (a shared file system) is reported with its host and never broken;
one that cannot be read or names no valid process id (a holder killed while writing it, a damaged file) is
refused with the command that removes it, since nothing proves that its holder has ended.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from longrope.atomic import process_alive
from longrope.errors import LongRopeError
from longrope.schema import problem

# What a lock file must hold to say who has it; other keys (started, command) are only shown.
HOLDER_KEYS = {"pid": int, "host": str}


def lock_path(out: str | Path) -> Path:
    out = Path(out).expanduser().resolve()  # resolved: a symbolic link and its target share one lock
    return out.parent / f".{out.name}.lock"


def _holder(path: Path) -> dict | None:
    """The lock file's record, or None when it cannot be read or does not name a process id and host."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # ValueError: bad JSON or not UTF-8
        return None
    if not isinstance(data, dict) or any(problem(data.get(k), t, k) for k, t in HOLDER_KEYS.items()):
        return None
    return data if data["pid"] > 0 else None


def _stale(holder: dict) -> bool:
    """Whether the holder is provably gone: on this machine, and its process no longer runs."""
    return holder["host"] == socket.gethostname() and not process_alive(holder["pid"])


@contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold the lock of output directory ``out`` for the duration; ``LongRopeError`` if another process has it."""
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(["longrope", *sys.argv[1:]]) if sys.argv else "python"}
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:
                raise LongRopeError(
                    f"{Path(out)} is locked by {path}, which names no process that can be checked (unreadable or "
                    f"damaged); if no longrope command is writing {Path(out)}, remove the lock: rm '{path}'"
                ) from None
            if attempt == 0 and _stale(holder):
                path.unlink(missing_ok=True)  # its process is gone: take the lock over
                continue
            who = (f"process {holder['pid']} on {holder['host']} since {holder.get('started')} "
                   f"({holder.get('command')})")
            raise LongRopeError(f"{Path(out)} is in use by {who}; wait for it to finish or stop it "
                                f"(a lock of a process that has ended is taken over: {path})") from None
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(record) + "\n")
        except BaseException:  # a disk full or Ctrl-C while writing: leave no half-written lock behind
            path.unlink(missing_ok=True)
            raise
        break
    try:
        yield path
    finally:
        if (_holder(path) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
