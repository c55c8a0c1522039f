"""Outputs of a search: the JSONL evaluation log, the convergence plot, the progress display."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from longrope.atomic import atomic_write_bytes
from longrope.errors import LongRopeError
from longrope.progress import LoggedProgress, progress_columns


class EvaluationLog:
    """Append-only JSONL file, one line per evaluation, kept in agreement with the state file.

    On resume the first ``keep_bytes`` (what the state last saw) are checked: ``expected_rows`` lines of JSON
    whose ``order`` fields count 0, 1, ...; a longer file (rows of a batch the state never saved, the last one
    perhaps half-written by a killed process) is cut back. A log that is shorter, missing or damaged is rebuilt
    from ``rebuild()`` (the state's own records). Either way ``repaired`` says so, so no evaluation is silently
    lost or duplicated.
    """

    def __init__(self, path: Path, keep_bytes: int, expected_rows: int = 0,
                 rebuild: Callable[[], list[dict]] | None = None) -> None:
        self.path = path
        self.repaired: str | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep_bytes == 0:
            path.write_bytes(b"")
            return
        problem = self._problem(keep_bytes, expected_rows)
        if problem is None:
            with path.open("r+b") as handle:
                tail = handle.seek(0, os.SEEK_END) - keep_bytes
                handle.truncate(keep_bytes)
            if tail:  # a killed run's batch (its last line perhaps half-written) that the state never counted
                self.repaired = (f"{path} held {tail} bytes past the {expected_rows} rows the search state counts "
                                 "(a stopped run's unsaved batch); cut them off, that batch is evaluated again")
            return
        if rebuild is None:
            raise LongRopeError(f"{path} {problem}; it cannot be rebuilt here: delete the output directory")
        rows = rebuild()
        atomic_write_bytes(path, b"".join((json.dumps(row) + "\n").encode() for row in rows), fsync=True)
        self.repaired = f"{path} {problem}; rebuilt its {len(rows)} rows from the search state"

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def _problem(self, keep_bytes: int, expected_rows: int) -> str | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return "is missing"
        if len(data) < keep_bytes:
            return f"is shorter ({len(data)} bytes) than the state recorded ({keep_bytes})"
        try:
            orders = [json.loads(line)["order"] for line in data[:keep_bytes].decode().splitlines()]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return "has a damaged line"
        if orders != list(range(expected_rows)):
            return f"holds {len(orders)} rows out of order or not the state's {expected_rows}"
        return None

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
    from longrope.plots import pyplot, save_figure

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


def plot_front(front: list[tuple[float, float]], evaluated: list[tuple[float, float]],
               baselines: dict[str, tuple[float, float]], chosen: tuple[float, float] | None, path: Path,
               title: str = "two-objective search") -> Path:
    """PNG of a two-objective search in perplexity units (exp of the NLLs): every complete evaluation (faint), the
    Pareto front (a step line), each baseline (a labelled marker) and the shipped member (a star). Both axes are
    lower-better, on log scales. Left: everything (baselines beyond the window sit far away); right: zoomed on the
    front, with the baselines that fall near it."""
    import math

    from matplotlib.ticker import FormatStrFormatter

    from longrope.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    exp = lambda points: ([math.exp(a) for a, _ in points], [math.exp(b) for _, b in points])  # noqa: E731
    ordered = sorted(front)
    fx, fy = exp(ordered)
    markers = "osD^vP<>"
    for panel, ax in enumerate(axes):
        if evaluated:
            ax.scatter(*exp(evaluated), s=8, color="0.75", label="evaluated", zorder=1)
        ax.step(fx, fy, where="post", color="tab:blue", zorder=2)
        ax.scatter(fx, fy, s=22, color="tab:blue", label=f"Pareto front ({len(front)})", zorder=3)
        if panel:  # zoom: the front's box, widened to the baselines within twice its span
            span_x, span_y = max(fx) / min(fx), max(fy) / min(fy)
            low_x, high_x = min(fx) / span_x ** 0.5 / 1.02, max(fx) * span_x ** 0.5 * 1.02
            low_y, high_y = min(fy) / span_y ** 0.5 / 1.05, max(fy) * span_y ** 0.5 * 1.05
            for point in baselines.values():
                x, y = math.exp(point[0]), math.exp(point[1])
                if low_x / 1.5 <= x <= high_x * 1.5 and low_y / 1.5 <= y <= high_y * 1.5:
                    low_x, high_x = min(low_x, x / 1.02), max(high_x, x * 1.02)
                    low_y, high_y = min(low_y, y / 1.05), max(high_y, y * 1.05)
        for k, (name, point) in enumerate(sorted(baselines.items())):
            x, y = exp([point])
            ax.scatter(x, y, marker=markers[k % len(markers)], s=60, facecolors="none", edgecolors=f"C{k + 1}",
                       linewidths=1.5, label=f"{name} ({x[0]:.3g} / {y[0]:.3g})", zorder=4)
            ax.annotate(name, (x[0], y[0]), textcoords="offset points", xytext=(5, 4), fontsize=8,
                        annotation_clip=True)
        if chosen is not None:
            cx, cy = exp([chosen])
            ax.scatter(cx, cy, marker="*", s=180, color="tab:red", zorder=5,
                       label=f"shipped, selection rule ({cx[0]:.3g} / {cy[0]:.3g})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if panel:
            ax.set_xlim(low_x, high_x)
            ax.set_ylim(low_y, high_y)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FormatStrFormatter("%.4g"))
            axis.set_minor_formatter(FormatStrFormatter("%.4g"))
        ax.set_xlabel("document perplexity (natural text tokens)")
        ax.set_ylabel("needle-driven perplexity (answer tokens)")
        ax.set_title(title if not panel else "zoomed on the front")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def search_progress(console: Console) -> LoggedProgress:
    return LoggedProgress(
        *progress_columns("best ppl {task.fields[best]}", remaining_label="left"), console=console, transient=False
    )


def write_preset_from_search(search_dir: str | Path, path: str | Path, name: str, geometry, header: dict) -> Path:
    """A preset file for a model of ``geometry`` (`RopeGeometry`) from a finished search's ``best_spec.json``
    and ``result.json``: the header gets the search's settings, budget and fitness data beside what ``header``
    adds (model, figures, date, ...)."""
    from longrope.rope import load_spec, write_preset

    search_dir = Path(search_dir)
    try:
        result = json.loads((search_dir / "result.json").read_text())
    except (OSError, ValueError) as exc:
        raise LongRopeError(f"{search_dir} holds no finished search (result.json: {exc})") from None
    spec = load_spec(search_dir / "best_spec.json")
    search = {key: result.get(key) for key in ("evaluations", "forward_tokens", "seconds", "seed_fitness",
                                               "fitness", "perplexity", "config", "space")}
    return write_preset(path, name, spec, geometry, {**header, "search": search, "fitness_data": result.get("data")})
