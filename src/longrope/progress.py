"""The columns every long loop's rich progress bar shows, so all bars look alike."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_columns(*fields: str, remaining_label: str = "") -> list[ProgressColumn]:
    """Description, bar, done/total, then ``fields`` (rich format strings such as ``"loss {task.fields[loss]}"``),
    elapsed and remaining time (preceded by ``remaining_label`` when given)."""
    columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f) for f in fields]
    columns.append(TimeElapsedColumn())
    if remaining_label:
        columns.append(TextColumn(remaining_label))
    columns.append(TimeRemainingColumn())
    return columns
