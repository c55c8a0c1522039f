"""Outputs of a search: the JSONL evaluation log, the convergence plot, the progress display."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console

from longrope.progress import LoggedProgress, progress_columns


class EvaluationLog:
    """Append-only JSONL file, one line per evaluation; truncated to the length the state file agrees with."""

    def __init__(self, path: Path, keep_bytes: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > keep_bytes:
            with path.open("r+b") as handle:
                handle.truncate(keep_bytes)
        elif not path.exists() or keep_bytes == 0:
            path.write_bytes(b"")

    def append(self, rows: list[dict]) -> int:
        """Write ``rows`` durably and return the new file length."""
        with self.path.open("ab") as handle:
            for row in rows:
                handle.write((json.dumps(row) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())
            return handle.tell()


def plot_convergence(history: list[dict], path: Path, title: str = "LongRoPE search") -> Path:
    """PNG of the best and median parent fitness (mean NLL = log perplexity) per generation."""
    from longrope.eval.report import pyplot, save_figure

    plt = pyplot()
    generations = [h["generation"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(generations, [h["best"] for h in history], marker="o", label="best")
    ax.plot(
        generations, [h["median"] for h in history], marker=".", linestyle="--", label="median of parents"
    )
    ax.set_xlabel("generation (0 = initial population)")
    ax.set_ylabel("fitness: mean NLL (log perplexity)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def search_progress(console: Console) -> LoggedProgress:
    return LoggedProgress(
        *progress_columns("best ppl {task.fields[best]}", remaining_label="left"), console=console, transient=False
    )
