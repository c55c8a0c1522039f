"""Needle-in-a-haystack grid: passkey-style retrieval at fixed depths (0..100%) x lengths, as a heatmap.

Each cell runs ``trials`` prompts of exactly ``length`` tokens with the key line at ``depth`` (fraction of
the filler before it) and a random 5-digit key (seeded per cell and trial, so every method sees the same
prompts). The PNG puts depth on y, length on x, red (0%) to green (100%).

Python use::

    from longrope.eval import needle_grid
    grid = needle_grid(model, tokenizer, lengths=[256, 512, 1024], depths=[0, .25, .5, .75, 1], template="code")
    grid.plot("needle.png")
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from longrope.errors import LongRopeError
from longrope.eval.passkey import (
    KEY_RANGE,
    PasskeyTemplate,
    PasskeyTrial,
    check_answer_budget,
    get_template,
    run_passkey_trial,
)
from longrope.eval.report import interrupted_with, markdown_table, plot_heatmap, write_report
from longrope.progress import progress_bar
from longrope.rope import RopeSpec

DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def parse_depths(depths: Sequence[float] | int) -> list[float]:
    """A list of depths in [0, 1]; an int n gives n evenly spaced depths from 0 to 1."""
    if isinstance(depths, int) and not isinstance(depths, bool):
        if depths < 1:
            raise LongRopeError(f"the number of depths must be >= 1, got {depths}")
        return [i / (depths - 1) for i in range(depths)] if depths > 1 else [0.5]
    out = [float(d) for d in depths]
    if not out:
        raise LongRopeError("give at least one depth")
    for d in out:
        if not 0.0 <= d <= 1.0:
            raise LongRopeError(f"depths are fractions between 0 and 1 (0% .. 100%), got {d}")
    return out


@dataclass
class NeedleGrid:
    """Accuracy per (depth, length) cell with every trial kept."""

    lengths: list[int]
    depths: list[float]
    trials: list[PasskeyTrial] = field(default_factory=list)

    def accuracy(self) -> list[list[float]]:
        """[depth][length] accuracy (0..1)."""
        cells: dict[tuple[float, int], list[bool]] = {}
        for t in self.trials:
            cells.setdefault((t.depth, t.length), []).append(t.correct)
        return [[sum(cells.get((d, n), [])) / max(1, len(cells.get((d, n), []))) for n in self.lengths]
                for d in self.depths]

    def mean_accuracy(self) -> float:
        return sum(t.correct for t in self.trials) / max(1, len(self.trials))

    def to_markdown(self) -> str:
        rows = [[f"{d:.0%}"] + [f"{100 * a:.0f}%" for a in row] for d, row in zip(self.depths, self.accuracy())]
        return markdown_table(["depth \\ length"] + [str(n) for n in self.lengths], rows)

    def plot(self, path: str | Path, title: str = "needle retrieval accuracy") -> Path:
        return plot_heatmap(self.accuracy(), self.lengths, self.depths, path, title=title)

    def to_dict(self) -> dict[str, Any]:
        return {"lengths": self.lengths, "depths": self.depths, "accuracy": self.accuracy(),
                "mean_accuracy": self.mean_accuracy(), "trials": [asdict(t) for t in self.trials]}


def needle_grid(model: nn.Module, tokenizer, lengths: Sequence[int], depths: Sequence[float] | int = DEFAULT_DEPTHS,
                trials: int = 2, seed: int = 0, template: str | PasskeyTemplate = "natural",
                max_new_tokens: int = 10, progress: bool = True, description: str = "needle") -> NeedleGrid:
    """Retrieval accuracy of the model as it is now on a lengths x depths grid, ``trials`` keys per cell."""
    if not lengths or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in lengths):
        raise LongRopeError(f"lengths must be positive integers, got {list(lengths)!r}")
    if trials < 1:
        raise LongRopeError(f"trials must be >= 1, got {trials}")
    check_answer_budget(tokenizer, max_new_tokens)
    lengths = sorted(set(lengths))
    depths = parse_depths(depths)
    t = get_template(template)
    grid = NeedleGrid(lengths, depths)
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=len(lengths) * len(depths) * trials)
        for length in lengths:
            for depth in depths:
                for i in range(trials):
                    key = random.Random(f"needle-{seed}-{length}-{depth}-{i}").randint(*KEY_RANGE)
                    grid.trials.append(run_passkey_trial(model, tokenizer, length, key, depth, t, max_new_tokens, i))
                    bar.advance(task)
    return grid


def evaluate_needle(model: nn.Module, tokenizer, specs: Mapping[str, RopeSpec | None], lengths: Sequence[int],
                    depths: Sequence[float] | int = DEFAULT_DEPTHS, trials: int = 2, seed: int = 0,
                    template: str | PasskeyTemplate = "natural", max_new_tokens: int = 10,
                    progress: bool = True) -> dict[str, NeedleGrid]:
    """A needle grid for every spec (None: the model's own RoPE); the model is left as it was."""
    from longrope.eval.perplexity import applied

    out = {}
    for name, spec in specs.items():
        with applied(model, spec), interrupted_with(out):
            out[name] = needle_grid(model, tokenizer, lengths, depths, trials, seed, template, max_new_tokens,
                                    progress, description=f"needle {name}")
    return out


def write_needle_report(grids: Mapping[str, NeedleGrid], out_dir: str | Path, specs: Mapping[str, Any] | None = None,
                        settings: Mapping[str, Any] | None = None, seed: int | None = None) -> dict[str, Path]:
    """``needle.json``, ``needle.md`` and one heatmap ``needle-<method>.png`` per method in ``out_dir``."""
    out_dir = Path(out_dir)
    markdown = "# Needle-in-a-haystack accuracy\n"
    paths: dict[str, Path] = {}
    for name, grid in grids.items():
        markdown += f"\n## {name} (mean {100 * grid.mean_accuracy():.0f}%)\n\n" + grid.to_markdown()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        paths[f"heatmap:{name}"] = grid.plot(out_dir / f"needle-{safe}.png", title=f"needle retrieval: {name}")
    payload = {
        "settings": dict(settings or {}),
        "specs": {m: (s.to_dict() if hasattr(s, "to_dict") else s) for m, s in (specs or {}).items()},
        "grids": {m: g.to_dict() for m, g in grids.items()},
    }
    paths.update(write_report(out_dir, "needle", payload, markdown, seed=seed))
    return paths
