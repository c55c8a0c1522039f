"""One writer per output directory: a lock file beside it, naming the process that holds it.

Two searches (or two ``--resume`` runs) on one ``--out`` would interleave their logs and disagree about the best
result; a long command takes ``output_lock(out)`` first, and a second one stops at once with a message naming the
holder. The lock is the hidden sibling ``.NAME.lock`` (so it also guards a directory that does not exist yet or
is replaced as a whole, as an export is). A lock left by a process that no longer runs on this machine is taken
over; one from another machine (a shared file system) is reported with its host and never broken.
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


def lock_path(out: str | Path) -> Path:
    out = Path(out).expanduser().absolute()
    return out.parent / f".{out.name}.lock"


def _holder(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stale(holder: dict | None) -> bool:
    if holder is None:  # unreadable: a writer killed between creating and filling it
        return True
    if holder.get("host") != socket.gethostname():
        return False
    return not process_alive(int(holder.get("pid", 0)))


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
            if attempt == 0 and _stale(holder):
                path.unlink(missing_ok=True)  # its process is gone: take the lock over
                continue
            who = (f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
                   f"({holder.get('command')})") if holder else "another process"
            raise LongRopeError(f"{Path(out)} is in use by {who}; wait for it to finish or stop it "
                                f"(a lock of a process that has ended is taken over: {path})") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record) + "\n")
        break
    try:
        yield path
    finally:
        if (_holder(path) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
