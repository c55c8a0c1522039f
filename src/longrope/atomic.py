"""Files and directories that are never seen half-written: write a temporary sibling, then rename it into place."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def _create_sibling(path: Path) -> tuple[int, Path]:
    """A new, uniquely named, hidden file beside ``path``, opened for writing.

    Not `tempfile.mkstemp`: its files are mode 0600, and the rename would hand that private mode to the output.
    Creating with 0666 lets the kernel apply the umask (and default ACLs) exactly as a plain ``open`` does.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` (parents created) so that readers see the old file or the new one, never part.

    ``fsync`` also survives a power cut (for state that a resumed run depends on); it costs a disk flush.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_dir(final: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary sibling ``.NAME.tmp-PID`` of ``final``, then move it into place.

    An existing ``final`` is moved aside and removed only once the new directory is in place, so an
    interruption leaves the old directory or the new one; the temporary directory goes on every exit path.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


__all__ = ["atomic_dir", "atomic_write_bytes"]
