"""``--config FILE`` of the long commands: a TOML or JSON table of a config dataclass's fields (`SearchConfig`,
`FinetuneConfig`), the same keys as a plan stage. Options given on the command line win over the file; the file
wins over the options' defaults.

The file is checked here, when it is read: only the dataclass's fields, each of its declared type
(`longrope.schema`), so ``racing = "false"`` or ``weight_decay = nan`` is one line naming the file and the key
before any work. The values' ranges are the config's own ``validate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longrope.errors import LongRopeError
from longrope.schema import check_table, field_types, read_document


def read_config_file(path: str | Path, config_cls: type) -> dict[str, Any]:
    """The table in ``path`` (``.toml`` or ``.json``), checked to name only fields of ``config_cls``, each of the
    field's type."""
    path = Path(path).expanduser()
    data = read_document(path, "--config file")
    try:
        return check_table(data, field_types(config_cls), what=f"a table of {config_cls.__name__} settings")
    except LongRopeError as exc:
        raise LongRopeError(f"--config: {path}: {exc}") from None


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
