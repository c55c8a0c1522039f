"""What a search run leaves in its output directory: the rows of ``evaluations.jsonl``, and at the end the best
spec (``best_spec.json``), ``result.json``, the convergence plot and the `SearchResult` that lists them.

`report` holds the file mechanics (the append-only log, the plot, the progress bar); this module decides what
goes into them from the `SearchState`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from longrope.atomic import atomic_write_text
from longrope.errors import LongRopeError
from longrope.notes import note
from longrope.rope import LongRopeSpec, save_spec
from longrope.search.fitness import FitnessData
from longrope.search.generation import complete_fitness
from longrope.search.report import EvaluationLog, plot_convergence
from longrope.search.space import Genome, SearchSpace
from longrope.search.state import Record, SearchState

if TYPE_CHECKING:
    from longrope.search.evolution import SearchConfig

SPEC_FILE = "best_spec.json"
LOG_FILE = "evaluations.jsonl"
PLOT_FILE = "convergence.png"
RESULT_FILE = "result.json"


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

    @property
    def perplexity(self) -> float:
        return math.exp(self.fitness)


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


def best_result(state: SearchState, space: SearchSpace, out_dir: Path, state_path: Path) -> SearchResult:
    """The best complete individual (of the parents, else of every record) as a `SearchResult`; writes nothing."""
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
    atomic_write_text(result.out_dir / RESULT_FILE, json.dumps(summary, indent=2))
    console.print(
        f"best ppl {result.perplexity:.3f} (fitness {result.fitness:.4f}) after {result.evaluations} "
        f"evaluations, {result.forward_tokens:,} forward tokens, {result.seconds:.0f} s; spec: {result.spec_path}",
        markup=False, soft_wrap=True,  # a path may hold brackets; one line, whole
    )
