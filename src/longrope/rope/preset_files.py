"""Where the shipped presets lie and how their files are read (raw JSON), below `spec` so `load_spec` can take
a preset name. The meaning of a preset (its spec, geometry check, writing) is `longrope.rope.presets`."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from longrope.errors import LongRopeError

PRESET_PACKAGE = "longrope.presets"
PRESET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def preset_directory():
    """The directory (a ``Traversable``) that holds the shipped ``<name>.json`` files."""
    return resources.files(PRESET_PACKAGE)


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(entry.name[:-5] for entry in preset_directory().iterdir() if entry.name.endswith(".json"))


def is_preset_name(text: str) -> bool:
    """True when ``text`` names a shipped preset and is not an existing path (a file always wins)."""
    return bool(PRESET_NAME.match(text)) and not Path(text).exists() and text in preset_names()


def read_preset(name: str) -> dict[str, Any]:
    """The parsed JSON of preset ``name``; an unknown name is an error listing the shipped ones."""
    names = preset_names()
    if name not in names:
        raise LongRopeError(f"unknown preset {name!r}; shipped presets: {', '.join(names) or 'none'}")
    try:
        return json.loads((preset_directory() / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise LongRopeError(f"preset {name!r} is damaged ({exc}); reinstall longrope") from None
