"""Long work reports in plain lines when nobody watches a terminal, and draws only a bar when someone does."""

from __future__ import annotations

import io

from rich.console import Console

from longrope.progress import LoggedProgress, progress_columns


def _run(console: Console, total: int = 37, min_interval: float = 0.0) -> str:
    with LoggedProgress(*progress_columns("loss {task.fields[loss]:.3f}"), console=console,
                        min_interval=min_interval) as bar:
        task = bar.add_task("training", total=total, loss=1.0)
        for step in range(total):
            bar.update(task, advance=1, loss=1.0 / (step + 1))
    return console.file.getvalue()


def test_plain_lines_every_tenth_when_not_a_terminal():
    out = _run(Console(file=io.StringIO(), force_terminal=False, width=120))
    lines = [line for line in out.splitlines() if line.startswith("training:")]
    assert lines[0] == "training: started (37 to do)"
    assert [line.split("(")[1].split(")")[0] for line in lines[1:]] == [f"{10 * k}%" for k in range(1, 11)]
    assert "37/37 (100%), loss 0.02703" in lines[-1]


def test_quick_tasks_report_only_start_and_end():
    out = _run(Console(file=io.StringIO(), force_terminal=False, width=120), min_interval=3600)
    lines = [line for line in out.splitlines() if line.startswith("training:")]
    assert len(lines) == 2 and lines[0].endswith("started (37 to do)") and "(100%)" in lines[1]


def test_lines_are_not_wrapped_in_a_narrow_log():
    out = _run(Console(file=io.StringIO(), force_terminal=False, width=30))
    assert all(line.startswith("training") or not line.strip() or "━" in line for line in out.splitlines())


def test_no_plain_lines_on_a_terminal():
    out = _run(Console(file=io.StringIO(), force_terminal=True, width=120))
    assert "training: started" not in out and "(10%)" not in out


def test_quiet_console_prints_nothing():
    assert _run(Console(file=io.StringIO(), quiet=True)) == ""


def test_a_description_is_plain_text_on_a_terminal_and_in_a_log():
    # Descriptions name spec files and models: "[/]" must neither raise MarkupError nor "[bold]" vanish.
    description = "ppl /tmp/a[/]b[bold]c"
    for terminal in (True, False):
        console = Console(file=io.StringIO(), force_terminal=terminal, width=200)
        with LoggedProgress(*progress_columns(), console=console, min_interval=0.0) as bar:
            task = bar.add_task(description, total=2)
            bar.advance(task, 2)
            bar.refresh()
        assert description in console.file.getvalue(), terminal
