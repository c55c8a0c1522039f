"""Reports: every evaluation writes JSON (settings, per-sample results, versions, seed), a markdown table and,
where it helps, a PNG plot into one output directory. (The shared progress bar is `longrope.progress.progress_bar`,
the PNG writer `longrope.plots`.)
"""

from __future__ import annotations

import json
import math
import platform
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from longrope.atomic import atomic_write_text
from longrope.plots import pyplot, save_figure


def environment() -> dict[str, str]:
    """Versions of python, torch, transformers and longrope, and the machine, for reproducibility."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import transformers

    try:
        longrope_version = version("longrope")
    except PackageNotFoundError:  # not installed as a distribution
        longrope_version = "unknown"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "longrope": longrope_version,
        "platform": platform.platform(),
        "threads": str(torch.get_num_threads()),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if isinstance(value, Path):
        return str(value)
    return value


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C during an evaluation; ``partial`` is its table holding only the methods finished before it."""

    def __init__(self, partial: Any) -> None:
        super().__init__()
        self.partial = partial


@contextmanager
def interrupted_with(partial: Any) -> Iterator[None]:
    """Turn a Ctrl-C inside the block into ``EvaluationInterrupted(partial)`` (``partial`` filled so far)."""
    try:
        yield
    except EvaluationInterrupted:
        raise
    except KeyboardInterrupt as exc:
        raise EvaluationInterrupted(partial) from exc


# `_` only where it could open or close emphasis: inside a word (dynamic_ntk) it is text and stays readable.
MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|#$~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def markdown_text(value: str) -> str:
    """``value`` escaped so that markdown (GitHub's and rich's) shows it as written: a method name read from a
    spec file may hold ``*``, ``_``, ``|`` or ``[...]``."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 2-4 significant decimals, text cells are shown as written."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if not math.isfinite(value):
                return str(value)
            return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"
        return markdown_text(str(value))

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, name: str, payload: dict[str, Any], markdown: str,
                 seed: int | None = None) -> dict[str, Path]:
    """Write ``<name>.json`` (payload + environment + seed) and ``<name>.md`` into ``out_dir``; return paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {"kind": name, "seed": seed, "environment": environment(), **payload}
    paths = {
        "json": atomic_write_text(out / f"{name}.json", json.dumps(_jsonable(data), indent=2) + "\n"),
        "markdown": atomic_write_text(out / f"{name}.md", markdown),
    }
    return paths


def plot_ppl(ppl: dict[str, dict[int, float]], path: str | Path, title: str = "perplexity vs length",
             window: int | None = None) -> Path:
    """PNG of perplexity (log y) against length, one line per method; ``ppl[method][length]``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, by_length in ppl.items():
        lengths = sorted(by_length)
        ax.plot(lengths, [by_length[n] for n in lengths], marker="o", label=method)
    if window:
        ax.axvline(window, color="grey", linestyle=":", linewidth=1, label=f"original window {window}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda y, _: f"{y:.3g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0f}"))
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("perplexity")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_heatmap(grid: Sequence[Sequence[float]], lengths: Sequence[int], depths: Sequence[float],
                 path: str | Path, title: str = "needle retrieval accuracy") -> Path:
    """PNG heatmap of accuracy (0..1): depth on y (rows of ``grid``), length on x (columns), red -> green."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.45 * len(depths)))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto", origin="upper")
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    for row, values in enumerate(grid):
        for col, value in enumerate(values):
            ax.text(col, row, f"{value:.0%}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="accuracy")
    ax.set_title(title)
    return save_figure(fig, path)


def versions_line() -> str:
    env = environment()
    return (f"python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
            f"longrope {env['longrope']}")


__all__ = ["environment", "markdown_table", "plot_heatmap", "plot_ppl", "versions_line", "write_report"]

