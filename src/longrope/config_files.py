"""``--config FILE`` of the long commands: a TOML or JSON table of a config dataclass's fields (`SearchConfig`,
`FinetuneConfig`), the same keys as a plan stage. Options given on the command line win over the file; the file
wins over the options' defaults.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from longrope.errors import LongRopeError


def read_config_file(path: str | Path, config_cls: type) -> dict[str, Any]:
    """The table in ``path`` (``.toml`` or ``.json``), checked to name only fields of ``config_cls``."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise LongRopeError(f"--config: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise LongRopeError(f"--config: {path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise LongRopeError(f"--config: {path} must hold a table of settings, not {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise LongRopeError(f"--config: {path}: unknown setting(s) {', '.join(unknown)}; "
                            f"{config_cls.__name__} has: {', '.join(sorted(fields))}")
    return data


def _given(ctx, name: str) -> bool:
    """Whether option ``name`` was set by the user (command line, environment), not left at its default. By
    name: typer carries its own copy of click's ``ParameterSource`` enum."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def with_config_file(ctx, path: str | Path | None, values: dict[str, Any],
                     config_cls: type) -> dict[str, Any]:
    """``values`` (field -> the command's value) with the file's settings where the option was not given."""
    if path is None:
        return values
    given = {name for name in values if _given(ctx, name)}
    merged = dict(values)
    merged.update({name: value for name, value in read_config_file(path, config_cls).items() if name not in given})
    return merged
