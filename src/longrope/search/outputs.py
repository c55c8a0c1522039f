"""What a search run leaves in its output directory: the rows of ``evaluations.jsonl``, and at the end the best
spec (``best_spec.json``), ``result.json``, the convergence plot and the `SearchResult` that lists them; with two
objectives also the Pareto front (``front.json``, ``front.png``, baselines marked) and the member the selection
rule (`pareto.choose`) shipped as ``best_spec.json``.

`report` holds the file mechanics (the append-only log, the plot, the progress bar); this module decides what
goes into them from the `SearchState`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from rich.console import Console

from longrope.atomic import atomic_write_text
from longrope.errors import LongRopeError
from longrope.notes import note
from longrope.rope import (
    DynamicNTKSpec,
    LinearSpec,
    LongRopeSpec,
    NoScaling,
    NTKSpec,
    RopeSpec,
    YarnSpec,
    save_spec,
)
from longrope.search.config import SearchConfig
from longrope.search.fitness import FitnessData
from longrope.search.generation import complete_fitness
from longrope.search.pareto import SELECTION_RULE, choose, first_front
from longrope.search.report import EvaluationLog, plot_convergence, plot_front
from longrope.search.space import Genome, SearchSpace
from longrope.search.state import Record, SearchState

SPEC_FILE = "best_spec.json"
LOG_FILE = "evaluations.jsonl"
PLOT_FILE = "convergence.png"
RESULT_FILE = "result.json"
FRONT_FILE = "front.json"
FRONT_PLOT_FILE = "front.png"


def baseline_specs(factor: float, original_window: int, fixed_long: LongRopeSpec | None = None) -> dict[str, RopeSpec]:
    """The methods a two-objective search marks on its front, at scale ``factor``: no scaling, PI, NTK,
    dynamic NTK and YaRN (the demo's and README's baselines). A short-factor search (``fixed_long``: the long
    spec it completes) works inside the original window, where the rivals are the model as it was and the long
    factors used there too (as short factors: a LongRoPE spec inside its window uses its short ones)."""
    if fixed_long is not None:
        return {"none": NoScaling(), "long_factors": replace(fixed_long, short_factor=fixed_long.long_factor)}
    return {
        "none": NoScaling(),
        "pi": LinearSpec(factor=factor, original_window=original_window),
        "ntk": NTKSpec(factor=factor, original_window=original_window),
        "dynamic_ntk": DynamicNTKSpec(factor=factor, original_window=original_window),
        "yarn": YarnSpec(factor=factor, original_window=original_window),
    }


@dataclass
class SearchResult:
    """The best spec found and how the search went. ``fitness`` is mean NLL on the search documents."""

    spec: LongRopeSpec
    fitness: float
    genome: Genome
    seeds: dict[str, float]
    history: list[dict]
    evaluations: int
    forward_tokens: int
    seconds: float
    out_dir: Path
    spec_path: Path
    log_path: Path
    plot_path: Path
    state_path: Path
    # Two objectives: the shipped member's needle NLL, the front (members as dicts, `front_rows`), the baselines
    # ({name: (document NLL, needle NLL)}) and the selection's reason.
    needle: float | None = None
    front: list[dict] | None = None
    baselines: dict[str, tuple[float, float]] | None = None
    selection: str | None = None
    evaluated: list[tuple[float, float]] | None = None  # (document NLL, needle NLL) of every complete evaluation
    baseline_tokens: int = 0
    front_path: Path | None = None
    front_plot_path: Path | None = None

    @property
    def perplexity(self) -> float:
        return math.exp(self.fitness)

    @property
    def needle_perplexity(self) -> float | None:
        return None if self.needle is None else math.exp(self.needle)


# ---------------------------------------------------------------------------------------------- evaluation log


def log_row(state: SearchState, record: Record) -> dict:
    """The ``evaluations.jsonl`` line of ``record``, evaluated in the group now under way."""
    genome = Genome.from_key(record.key)
    seed = next((name for name, key in state.seeds.items() if key == record.key), None)
    return {
        "order": record.order,
        "generation": record.generation,
        "stage": state.stage,
        "genome": genome.to_json(),
        "seed": seed,
        "fitness": record.fitness,
        "perplexity": math.exp(record.fitness) if record.complete else None,
        "complete": record.complete,
        "estimate": record.estimate,
        "per_doc": record.per_doc,
        "tokens": record.tokens,
        "seconds": record.seconds,
        "threshold": state.threshold,
        **({"in_window_penalty": record.penalty} if record.penalty is not None else {}),
        **({"needle": record.needle, "needle_perplexity": math.exp(record.needle) if record.complete else None,
            "needle_estimate": record.needle_estimate, "needle_per_doc": record.needle_per_doc}
           if record.needle is not None else {}),
    }


def rebuilt_rows(state: SearchState) -> list[dict]:
    """The log rows of every record, for a log lost or damaged since the state was saved (the group stage
    and racing threshold of past rows are not kept in the state: null)."""
    records = sorted(state.records.values(), key=lambda r: r.order)
    return [{**log_row(state, r), "stage": None, "threshold": None, "rebuilt": True} for r in records]


def open_log(out_dir: Path, state: SearchState) -> EvaluationLog:
    """The evaluation log of ``out_dir``, cut back to (or rebuilt as) what ``state`` last saw."""
    log = EvaluationLog(out_dir / LOG_FILE, state.log_bytes, len(state.records),
                        rebuild=lambda: rebuilt_rows(state))
    if log.repaired:  # shown even without progress display: the user must know
        note(log.repaired)
        state.log_bytes = log.size
    return log


# ------------------------------------------------------------------------------------------------ final result


def front_rows(state: SearchState, space: SearchSpace) -> list[dict]:
    """The Pareto front of every complete two-objective record, by document NLL: one dict per member."""
    keys = [k for k, r in state.records.items() if r.point() is not None]
    points = [state.records[k].point() for k in keys]
    rows = []
    for i in first_front(points):
        record, genome = state.records[keys[i]], Genome.from_key(keys[i])
        seed = next((name for name, key in state.seeds.items() if key == keys[i]), None)
        rows.append({"key": keys[i], "genome": genome.to_json(), "seed": seed, "fitness": record.fitness,
                     "perplexity": math.exp(record.fitness), "needle": record.needle,
                     "needle_perplexity": math.exp(record.needle), "order": record.order,
                     "spec": space.to_spec(genome).to_dict()})
    return rows


def best_result(state: SearchState, space: SearchSpace, out_dir: Path, state_path: Path) -> SearchResult:
    """The best complete individual (of the parents, else of every record) as a `SearchResult`; writes nothing.
    With two objectives: the front member `pareto.choose` picks against the baselines."""
    front = selection = baselines = None
    if any(r.needle is not None for r in state.records.values()):
        front = front_rows(state, space)
        if not front:
            raise LongRopeError("the search evaluated no complete candidate")
        baselines = {n: (v[0], v[1]) for n, v in (state.baselines or {}).items()}
        choice = choose([(row["fitness"], row["needle"]) for row in front], baselines)
        for i, row in enumerate(front):
            row["chosen"] = i == choice.index
        best_key, selection = front[choice.index]["key"], choice.reason
    else:
        ranked = complete_fitness(state, state.parents) or complete_fitness(state, state.records)
        best_key = ranked[0][1] if ranked else None
    if best_key is None:
        raise LongRopeError("the search evaluated no complete candidate")
    genome = Genome.from_key(best_key)
    seeds = {
        name: state.records[key].fitness
        for name, key in state.seeds.items()
        if key in state.records and state.records[key].complete
    }
    return SearchResult(
        spec=space.to_spec(genome),
        fitness=state.records[best_key].fitness,
        genome=genome,
        seeds=seeds,
        history=list(state.history),
        evaluations=len(state.records),
        forward_tokens=state.forward_tokens,
        seconds=state.seconds,
        out_dir=out_dir,
        spec_path=out_dir / SPEC_FILE,
        log_path=out_dir / LOG_FILE,
        plot_path=out_dir / PLOT_FILE,
        state_path=state_path,
        needle=state.records[best_key].needle,
        front=front,
        baselines=baselines,
        selection=selection,
        evaluated=None if front is None else [r.point() for r in state.records.values() if r.point() is not None],
        baseline_tokens=state.baseline_tokens,
        front_path=None if front is None else out_dir / FRONT_FILE,
        front_plot_path=None if front is None else out_dir / FRONT_PLOT_FILE,
    )


def write_outputs(
    result: SearchResult,
    data: FitnessData,
    space: SearchSpace,
    config: SearchConfig,
    title: str,
    console: Console,
    machine: dict | None = None,
) -> None:
    """Write ``best_spec.json``, the convergence plot (when a generation was recorded) and ``result.json``
    (``machine``: where the forwards ran, `longrope.hardware.model_record`)."""
    save_spec(result.spec, result.spec_path)
    if result.history:
        plot_convergence(result.history, result.plot_path, title)
    summary = {
        "fitness": result.fitness,
        "perplexity": result.perplexity,
        "genome": result.genome.to_json(),
        "seed_fitness": result.seeds,
        "evaluations": result.evaluations,
        "forward_tokens": result.forward_tokens,
        "seconds": round(result.seconds, 2),
        "data": data.description,
        "space": space.describe(),
        "config": asdict(config),
        "machine": machine,
        "history": result.history,
    }
    if result.front is not None:
        summary.update(needle=result.needle, needle_perplexity=result.needle_perplexity,
                       selection_rule=SELECTION_RULE, selection=result.selection,
                       baselines={n: {"fitness": a, "needle": b} for n, a, b in _rows(result.baselines)},
                       front_size=len(result.front))
        write_front(result, data, title)
    atomic_write_text(result.out_dir / RESULT_FILE, json.dumps(summary, indent=2))
    needle = "" if result.needle is None else f", needle ppl {result.needle_perplexity:.3f} ({result.selection})"
    console.print(
        f"best ppl {result.perplexity:.3f} (fitness {result.fitness:.4f}){needle} after {result.evaluations} "
        f"evaluations, {result.forward_tokens:,} forward tokens, {result.seconds:.0f} s; spec: {result.spec_path}",
        markup=False, soft_wrap=True,  # a path may hold brackets; one line, whole
    )


def _rows(baselines: dict[str, tuple[float, float]] | None) -> list[tuple[str, float, float]]:
    return [(n, a, b) for n, (a, b) in (baselines or {}).items()]


def write_front(result: SearchResult, data: FitnessData, title: str) -> None:
    """``front.json`` (members, baselines, the rule and its pick) and ``front.png`` (the front, every complete
    evaluation faintly, each baseline marked, the pick starred)."""
    baselines = {n: {"fitness": a, "perplexity": math.exp(a), "needle": b, "needle_perplexity": math.exp(b)}
                 for n, a, b in _rows(result.baselines)}
    payload = {
        "objectives": ["document NLL (natural text tokens)", "needle NLL (answer tokens only)"],
        "data": data.description,
        "selection_rule": SELECTION_RULE,
        "selection": result.selection,
        "chosen": next(row for row in result.front if row.get("chosen")),
        "members": result.front,
        "baselines": baselines,
        "baseline_tokens": result.baseline_tokens,
        "forward_tokens": result.forward_tokens,
        "evaluations": result.evaluations,
    }
    atomic_write_text(result.front_path, json.dumps(payload, indent=2))
    plot_front([(row["fitness"], row["needle"]) for row in result.front], result.evaluated or [],
               {n: (v["fitness"], v["needle"]) for n, v in baselines.items()},
               (result.fitness, result.needle), result.front_plot_path, title)
