"""Where longrope keeps what it builds (the tiny model, tokenised samples): one cache directory."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LONGROPE_CACHE"


def cache_root() -> Path:
    """``$LONGROPE_CACHE`` (default ``~/.cache/longrope``), neither created nor checked."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "longrope").expanduser()


def cache_dir(*parts: str) -> Path:
    """Return ``$LONGROPE_CACHE`` (default ``~/.cache/longrope``) joined with ``parts``, created and writable.

    Raises ``PermissionError`` with the path and the variable to set when it cannot be written.
    """
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"cache directory {path} is not writable ({exc.strerror}); set {CACHE_ENV} to a writable directory"
        ) from exc
    return path
