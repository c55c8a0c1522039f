"""Files and directories that are never seen half-written: write a temporary sibling, then rename it into place.

Every temporary name carries the writer's process id (``.NAME.PID-TAG.tmp``, ``.NAME.tmp-PID``,
``.NAME.old-PID``), so a later writer of the same output removes the leftovers of a process that was killed
(SIGKILL, power cut) instead of letting them pile up beside the output. Liveness is judged on this machine.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True when a process with this id runs on this machine (or cannot be signalled: someone else's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(path: str | Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by processes that no longer run; return what went.

    A moved-aside old copy is put back instead when ``path`` itself is missing.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)-[0-9a-f]+\.tmp|(tmp|old|partial)-(\d+))$")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if match is None:
            continue
        pid = int(match.group(1) or match.group(3))
        if pid == os.getpid() or process_alive(pid):
            continue
        if match.group(2) == "old" and not path.exists():
            os.rename(sibling, path)  # killed between the two renames of atomic_dir: the old copy is the only one
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def _create_sibling(path: Path) -> tuple[int, Path]:
    """A new, uniquely named, hidden file beside ``path``, opened for writing.

    Not `tempfile.mkstemp`: its files are mode 0600, and the rename would hand that private mode to the output.
    Creating with 0666 lets the kernel apply the umask (and default ACLs) exactly as a plain ``open`` does.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def temporary_sibling(path: str | Path) -> Path:
    """A fresh, empty temporary file beside ``path`` (stale ones swept) for writers that need a file name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    fd, tmp = _create_sibling(path)
    os.close(fd)
    return tmp


def atomic_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a fresh temporary sibling of ``path``, then move it onto ``path``: readers see the
    old file or the new one, never part. For writers that take a file name (``torch.save``, ``savefig``)."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` (parents created) so that readers see the old file or the new one, never part.

    ``fsync`` also survives a power cut (for state that a resumed run depends on); it costs a disk flush.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
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


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode())


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_permissions(directory: Path) -> None:
    """Give every file under ``directory`` the mode a plain ``open`` would (some writers, e.g. transformers'
    shard saving, leave private 0600 temp-file modes behind)."""
    mode = 0o666 & ~_current_umask()
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def atomic_dir(final: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary sibling ``.NAME.tmp-PID`` of ``final``, then move it into place.

    An existing ``final`` is moved aside and removed only once the new directory is in place, so an
    interruption leaves the old directory or the new one; the temporary directory goes on every exit path.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
        normal_permissions(tmp)
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


__all__ = ["atomic_dir", "atomic_file", "atomic_write_bytes", "atomic_write_text", "process_alive", "sweep_stale",
           "temporary_sibling"]
