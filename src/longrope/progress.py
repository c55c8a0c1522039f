"""Progress of long loops: the columns every rich bar shows (so all bars look alike), and a bar that also
reports in plain lines when the output is not a terminal; `progress_bar`, the bar every long loop shows."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_columns(*fields: str, remaining_label: str = "") -> list[ProgressColumn]:
    """Description, bar, done/total, then ``fields`` (rich format strings such as ``"loss {task.fields[loss]}"``),
    elapsed and remaining time (preceded by ``remaining_label`` when given)."""
    # The description is plain text: it names files and models, whose names may hold brackets ("[/]").
    columns: list[ProgressColumn] = [TextColumn("{task.description}", markup=False), BarColumn(),
                                     MofNCompleteColumn()]
    columns += [TextColumn(f) for f in fields]
    columns.append(TimeElapsedColumn())
    if remaining_label:
        columns.append(TextColumn(remaining_label))
    columns.append(TimeRemainingColumn())
    return columns


class LoggedProgress(Progress):
    """A rich ``Progress`` that also works when nobody watches a terminal.

    On a terminal it is the ordinary live bar. When its console is not a terminal (a CI log, ``| tee``, a
    redirect), rich draws nothing until the end, so this prints a plain line when a task starts, each time it
    passes another tenth of its total (at most one line per ``min_interval`` seconds, so quick tasks stay
    short), and when it ends, with its fields and the time elapsed and left.
    """

    def __init__(self, *columns: ProgressColumn | str, min_interval: float = 10.0, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self.min_interval = min_interval
        self._logged_tenths: dict[TaskID, int] = {}
        self._logged_at: dict[TaskID, float] = {}

    @property
    def _plain(self) -> bool:
        return not self.console.is_terminal and not self.disable

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._logged_tenths[task_id] = 0
        self._logged_at[task_id] = time.monotonic()
        if self._plain:
            total = self._tasks[task_id].total
            self.console.print(f"{description}: started" + (f" ({total:g} to do)" if total else ""),
                               markup=False, soft_wrap=True)
        return task_id

    def update(self, task_id: TaskID, *args, **kwargs) -> None:
        super().update(task_id, *args, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        task = self._tasks.get(task_id)
        if not self._plain or task is None or not task.total:
            return
        tenths = min(10, int(10 * task.completed / task.total))
        if tenths <= self._logged_tenths.get(task_id, 0):
            return
        now = time.monotonic()
        if tenths < 10 and now - self._logged_at.get(task_id, 0.0) < self.min_interval:
            return
        self._logged_tenths[task_id] = tenths
        self._logged_at[task_id] = now
        fields = "".join(f", {key} {_plain_value(value)}" for key, value in task.fields.items())
        left = task.time_remaining
        timing = f", {task.elapsed or 0:.0f} s elapsed" + (f", ~{left:.0f} s left" if left and tenths < 10 else "")
        self.console.print(
            f"{task.description}: {task.completed:g}/{task.total:g} ({10 * tenths}%){fields}{timing}",
            markup=False, soft_wrap=True,  # one line per report, whatever the log's width
        )


def _plain_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextmanager
def progress_bar(enabled: bool = True, console: Console | None = None):
    """A rich progress bar on stderr (a no-op display when ``enabled`` is False)."""
    console = console or Console(stderr=True, quiet=not enabled)
    with LoggedProgress(
        *progress_columns(),
        console=console,
        disable=not enabled,
        transient=False,
    ) as bar:
        yield bar
