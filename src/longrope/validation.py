"""Checks of user input that run before any work: numbers in their range, output directories that can be written.

Each raises `LongRopeError` naming the option and the bad value, so a command fails in its first moment with
one line, not after loading a model (or after a whole evaluation) with a traceback.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from longrope.errors import LongRopeError


def check_number(name: str, value: float | None, *, minimum: float | None = None, above: float | None = None,
                 maximum: float | None = None) -> float | None:
    """``value`` if it is a finite number in range (``>= minimum``, ``> above``, ``<= maximum``); None passes.

    None is the "use the default" of optional settings; NaN and infinities are never a meaningful setting
    (NaN even slips through ``value < minimum``).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LongRopeError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise LongRopeError(f"{name} must be >= {minimum:g}, got {value!r}")
    if above is not None and value <= above:
        raise LongRopeError(f"{name} must be > {above:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise LongRopeError(f"{name} must be <= {maximum:g}, got {value!r}")
    return value


def check_text(name: str, value: str) -> str:
    """``value`` if it is a non-blank string: an empty ``--corpus ""`` must not quietly mean the default."""
    if not isinstance(value, str) or not value.strip():
        raise LongRopeError(f"{name} must not be empty, got {value!r}")
    return value


def check_output_dir(name: str, path: str | Path) -> Path:
    """``path`` (user-expanded) if it is a directory or can be created as one; nothing is created here.

    Run before the work, so a file in the way or an unwritable parent fails at once rather than at the end.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise LongRopeError(f"{name} {path} is a file; give a directory (it is created if missing)")
    if path.is_symlink() and not path.exists():
        raise LongRopeError(f"{name} {path} is a broken symbolic link; remove it or give another directory")
    existing = path
    while not existing.exists():  # the nearest existing ancestor is where mkdir would have to write
        existing = existing.parent
    if not existing.is_dir():
        raise LongRopeError(f"{name} {path} cannot be created: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LongRopeError(f"{name} {path} cannot be written: no write permission in {existing}")
    return path


__all__ = ["check_number", "check_output_dir", "check_text"]
