"""Presets: searched specs shipped with the package, each for one model geometry, usable wherever a spec is.

A preset is a JSON file in ``longrope/presets/`` named ``<name>.json``::

    {"name": "smollm2-16k",
     "geometry": {"dim": 64, "base": 100000.0, "original_window": 8192},
     "header": {"model": ..., "target_length": ..., "search": {...}, "fitness_data": "...", "date": ...,
                "figures": {...}, "summary": "..."},
     "spec": {"method": "longrope", ...}}

``load_spec("smollm2-16k")`` returns the spec; ``check_preset_fits(name, geometry)`` refuses a preset made for
another rotary geometry (a table searched for one base and head size means nothing for another).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longrope.atomic import atomic_write_text
from longrope.errors import LongRopeError
from longrope.rope.geometry import RopeGeometry
from longrope.rope.preset_files import PRESET_NAME, is_preset_name, read_preset
from longrope.rope.spec import RopeSpec, spec_from_dict
from longrope.schema import check_table, field_types


@dataclass(frozen=True)
class Preset:
    """A shipped spec with the geometry it was searched for and a header saying how (model, search, figures)."""

    name: str
    spec: RopeSpec
    geometry: RopeGeometry
    header: dict[str, Any]

    def fits(self, geometry: RopeGeometry) -> bool:
        return (self.geometry.dim, self.geometry.base, self.geometry.original_window) == (
            geometry.dim, geometry.base, geometry.original_window)


# The keys of a preset file and their types; `geometry` and `spec` are tables of their own classes.
PRESET_KEYS: dict[str, Any] = {"name": str, "geometry": dict, "header": dict, "spec": dict}


def preset_from_dict(data: dict[str, Any], where: str) -> Preset:
    try:
        check_table(data, PRESET_KEYS, noun="key", what="a preset table")
        missing = [key for key in ("name", "geometry", "spec") if key not in data]
        if missing:
            raise LongRopeError(f"not a preset: missing {', '.join(missing)} (needs name, geometry, spec)")
        geometry = RopeGeometry(**check_table(data["geometry"], field_types(RopeGeometry), prefix="geometry.",
                                              noun="key"))
        return Preset(name=data["name"], spec=spec_from_dict(data["spec"], prefix="spec."), geometry=geometry,
                      header=dict(data.get("header", {})))
    except TypeError as exc:  # a geometry key missing
        raise LongRopeError(f"{where}: not a preset (geometry needs dim, base, original_window): {exc}") from None
    except LongRopeError as exc:
        raise LongRopeError(f"{where}: {exc}") from None


def load_preset(name: str) -> Preset:
    """The shipped preset ``name``; an unknown name is an error listing the known ones."""
    return preset_from_dict(read_preset(name), f"preset {name!r}")


def check_preset_fits(name: str, geometry: RopeGeometry) -> None:
    """Refuse a preset named ``name`` on a model whose rotary geometry differs; do nothing for other names."""
    if not is_preset_name(name):
        return
    preset = load_preset(name)
    if not preset.fits(geometry):
        want, got = preset.geometry, geometry
        raise LongRopeError(
            f"preset {name!r} was searched for {preset.header.get('model', 'another model')} (rotary dim {want.dim}, "
            f"rope_theta {want.base:g}, window {want.original_window}); this model has rotary dim {got.dim}, "
            f"rope_theta {got.base:g}, window {got.original_window}. Search its own factors with `longrope search`")


def write_preset(path: str | Path, name: str, spec: RopeSpec, geometry: RopeGeometry,
                 header: dict[str, Any]) -> Path:
    """Write a preset file (atomically); ``load_preset`` reads it once it lies in ``longrope/presets/``."""
    if not PRESET_NAME.match(name):
        raise LongRopeError(f"preset name {name!r}: use lower-case letters, digits, '.', '_' and '-'")
    data = {"name": name,
            "geometry": {"dim": geometry.dim, "base": geometry.base, "original_window": geometry.original_window},
            "header": header, "spec": spec.to_dict()}
    path = Path(path)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path
