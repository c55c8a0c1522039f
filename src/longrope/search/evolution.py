"""The evolutionary search of LongRoPE (arXiv 2402.13753) and its LongRoPE2 refinements, fast and resumable.

Algorithm (as microsoft/LongRoPE ``evolution/``): an initial population of ``population`` individuals (the
seeds PI, NTK, YaRN [, a user table], then mutations of random members until full) is evaluated; each
generation keeps the best ``parents`` as parents and adds ``mutations`` mutated and ``crossovers`` crossed
children of random parents; duplicates of anything already evaluated are redrawn and never evaluated twice.

What makes it faster at equal quality (see `fitness` and notes/search.md):

- racing: a child is scored document by document and dropped once it provably (exact rule) or almost surely
  (the default predictive rule, `fitness.RacingRule`) cannot beat a reference parent. With the worst parent
  as reference (``racing_rank = parents``) that means it cannot enter the parent set: a child at or above
  it has ``parents`` individuals at least as good and cannot be selected, so the reference algorithm's
  selection is kept. By default children race against the parent at a quarter of the parent set
  and dropped ones still compete for the parent set with their predicted fitness (``estimated_parents``);
  `benchmarks/bench_search.py` measured this at ~0.48x the forward tokens and equal best fitness. The
  initial population is raced too: its first ``racing_rank`` members (the seeds first) are scored fully,
  the rest in groups against the best so far. Rules are fixed when a candidate group starts, so results do
  not depend on batching, on the number of ranks, or on interruptions;
- batching: ``batch`` candidates per forward, one RoPE table per row;
- bf16 forwards on CPU with the loss in fp32.
"""

from __future__ import annotations

import copy
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from longrope.errors import LongRopeError
from longrope.patch import model_geometry, restore
from longrope.rope import LongRopeSpec, RopeGeometry, save_spec
from longrope.search.distributed import Comm, init_from_env
from longrope.search.fitness import (
    Evaluation,
    Evaluator,
    FitnessData,
    PenalizedEvaluator,
    RacingRule,
    build_fitness_data,
    racing_rule,
)
from longrope.search.operators import crossover, mutate
from longrope.search.report import EvaluationLog, plot_convergence, search_progress
from longrope.search.space import (
    Genome,
    SearchSpace,
    make_short_space,
    make_space,
    read_factor_file,
    seed_genomes,
)
from longrope.search.state import (
    STATE_FILE,
    Record,
    SearchState,
    load_state,
    model_fingerprint,
    rng_from_json,
    rng_to_json,
    save_state,
    stable_hash,
)
from longrope.validation import check_number

SPEC_FILE = "best_spec.json"
LOG_FILE = "evaluations.jsonl"
PLOT_FILE = "convergence.png"
RESULT_FILE = "result.json"
MAX_DRAWS = 100  # attempts to draw a child that was never evaluated before giving up on that child

# Fields that do not change the result and may differ between a run and its resume.
_UNHASHED = ("batch", "chunk", "generations", "max_evaluations")


@dataclass
class SearchConfig:
    """Every option of the search. Give ``factor`` (s) or ``target_length`` (L' = s * L).

    Budget: ``population`` initial individuals, then ``generations`` generations of ``mutations`` +
    ``crossovers`` children with ``parents`` kept; ``max_evaluations`` caps the number of evaluations.
    Space: factors in [1, ``lambda_max``] (default 1.25*s) on a 0.01 grid; ``search_n_hat`` adds n_hat (not
    exportable to transformers when > 0); ``search_attention`` searches the attention factor on
    [``attention_min``, ``attention_max``]; otherwise ``attention_factor`` (None: the "su" policy).
    ``longrope2``: only pairs >= ``critical_pair`` (default: the theoretical one) searched, in [s, 2s].
    Fitness: ``docs`` documents of ``corpus``/``split`` (never test) cut to the target length; ``needle``
    scores only planted pass-key digits. Speed: ``batch`` candidates per forward, ``racing`` with the
    predictive rule of ``racing_z`` spreads (`fitness.RacingRule`; None: the exact rule),
    forwards in ``dtype`` (None: the model's own). ``racing_rank`` (default: a quarter of ``parents``;
    ``parents`` keeps the reference algorithm's selection) races children against that parent: a child
    must promise a place in that top to be scored fully (fewer tokens). ``estimated_parents``: a child
    dropped by the predictive rule still competes for the parent set with its predicted fitness, so a small
    racing rank saves tokens without narrowing the parent set (the best is always a fully scored individual).
    """

    factor: float | None = None
    target_length: int | None = None
    population: int = 64
    mutations: int = 16
    crossovers: int = 16
    parents: int = 32
    generations: int = 40
    mutation_prob: float = 0.3
    max_evaluations: int | None = None
    lambda_max: float | None = None
    search_n_hat: bool = False
    search_attention: bool = False
    attention_min: float = 1.0
    attention_max: float = 1.6
    attention_factor: float | None = None
    longrope2: bool = False
    critical_pair: int | None = None
    docs: int = 5
    corpus: str = "stdlib"
    split: str = "validation"
    data_seed: int = 0
    needle: bool = False
    seed: int = 0
    batch: int = 4
    racing: bool = True
    racing_z: float | None = 1.5
    racing_rank: int | None = None
    estimated_parents: bool = True
    portable: bool = False
    portable_weight: float = 1.0
    dtype: str | None = "bf16"
    factor_file: str | None = None
    chunk: int = 1024

    def validate(self) -> None:
        """Raise `LongRopeError` for settings no model can make work; needs no model, so callers check early."""
        if self.factor is None and self.target_length is None:
            raise LongRopeError("give the scale factor s or the target length")
        check_number("factor", self.factor)
        if self.factor is not None and self.factor <= 1:
            raise LongRopeError(
                f"factor must be > 1 so that the target length is above the model's original window, got {self.factor}"
            )
        check_number("target_length", self.target_length, minimum=2)
        check_number("lambda_max", self.lambda_max, minimum=1)
        check_number("critical_pair", self.critical_pair, minimum=0)
        check_number("attention_min", self.attention_min, above=0)
        check_number("attention_max", self.attention_max, minimum=self.attention_min)
        check_number("attention_factor", self.attention_factor, above=0)
        check_number("racing_z", self.racing_z)
        check_number("portable_weight", self.portable_weight, minimum=0)
        for name in ("population", "parents", "docs", "batch"):
            if getattr(self, name) < 1:
                raise LongRopeError(
                    f"{name} must be >= 1 (got {getattr(self, name)}): the search budget is zero"
                )
        for name in ("generations", "mutations", "crossovers"):
            check_number(name, getattr(self, name), minimum=0)
        if self.generations > 0 and self.mutations + self.crossovers == 0:
            raise LongRopeError("a generation needs at least one mutation or crossover")
        if self.parents > self.population:
            raise LongRopeError(f"parents ({self.parents}) cannot exceed the population ({self.population})")
        if self.max_evaluations is not None and self.max_evaluations < 1:
            raise LongRopeError(
                f"max_evaluations must be >= 1 (got {self.max_evaluations}): the budget is zero"
            )
        if not 0 <= self.mutation_prob <= 1:
            raise LongRopeError(f"mutation probability must be in [0, 1], got {self.mutation_prob}")
        if self.split == "test":
            raise LongRopeError("the search must not use the test split (it is for the final evaluation)")
        if self.racing_rank is not None and not 1 <= self.racing_rank <= self.parents:
            raise LongRopeError(f"racing_rank must be in 1..parents ({self.parents}), got {self.racing_rank}")
        if self.racing_z is not None and self.racing_z < 0:
            raise LongRopeError("racing z must be >= 0 (None: exact racing)")

    def target(self, original_window: int) -> tuple[float, int]:
        """(s, L') for a model whose original window is L."""
        if self.target_length is not None:
            length = int(self.target_length)
            factor = length / original_window
        else:
            factor = float(self.factor)
            length = int(round(factor * original_window))
        if length <= original_window:
            raise LongRopeError(
                f"the target length {length} must be above the model's original window {original_window}"
            )
        return factor, length

    @property
    def race_rank(self) -> int:
        """The parent rank children race against (``racing_rank``, or a quarter of ``parents`` when None)."""
        return self.racing_rank or max(1, self.parents // 4)

    def hashed(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in _UNHASHED}
        if not self.racing or self.racing_z is None:
            del out["estimated_parents"]  # only the predictive rule gives estimates: no effect here
        if not self.portable:  # absent when off, so states written before these settings existed still resume
            del out["portable"], out["portable_weight"]
        return out

    def planned_evaluations(self) -> int:
        total = self.population + self.generations * (self.mutations + self.crossovers)
        return total if self.max_evaluations is None else min(total, self.max_evaluations)


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


def evaluation_model(model, dtype: str | None):
    """The model the forwards run on: ``model`` itself when already in ``dtype``, else a cast copy."""
    if dtype is None:
        return model
    from longrope.models.loading import resolve_dtype

    want = resolve_dtype(dtype)
    if next(model.parameters()).dtype == want:
        return model
    restore(model)
    return copy.deepcopy(model).to(want)


# ------------------------------------------------------------------------------------------------ engine


class _Run:
    """One search: space, data, state, evaluator, communication; `loop` drives it to the end."""

    def __init__(
        self,
        model,
        space: SearchSpace,
        geometry: RopeGeometry,
        data: FitnessData,
        config: SearchConfig,
        out_dir: Path,
        resume: bool,
        progress: bool,
        comm: Comm,
        extra_seed,
        title: str,
        in_window: FitnessData | None = None,
    ):
        self.space, self.config, self.data, self.comm = space, config, data, comm
        self.geometry = geometry
        self.out_dir = Path(out_dir)
        self.state_path = self.out_dir / STATE_FILE
        self.title = title
        payload = {
            "config": config.hashed(),
            "space": space.describe(),
            "model": model_fingerprint(model),
            "data": data.fingerprint,
            "extra_seed": extra_seed,
            "format": 1,
            **({"in_window": in_window.fingerprint} if in_window is not None else {}),
        }
        self.config_hash = stable_hash(payload)
        comm.check_same(f"{self.config_hash}/batch={config.batch}", "search configuration (hash)")
        self.console = Console(stderr=True, quiet=not (progress and comm.is_main))

        loaded: tuple[str, object] = ("ok", None)
        if comm.is_main:
            try:
                if self.state_path.exists():
                    if not resume:
                        raise LongRopeError(
                            f"{self.state_path} exists: resume it (--resume / resume=True), or choose another "
                            "output directory, or delete it"
                        )
                    loaded = ("ok", load_state(self.state_path, self.config_hash))
                else:
                    fresh = SearchState(
                        config_hash=self.config_hash,
                        config=payload,
                        rng=rng_to_json(random.Random(config.seed)),
                    )
                    loaded = ("ok", fresh)
            except LongRopeError as exc:
                loaded = ("error", str(exc))
        status, value = comm.broadcast(loaded)  # every rank fails together
        if status == "error":
            raise LongRopeError(value)
        self.state: SearchState = value
        self.rng = rng_from_json(self.state.rng)
        self.seeds = seed_genomes(space, geometry, extra_seed)
        scoring_model = evaluation_model(model, config.dtype)
        self.evaluator = (
            Evaluator(scoring_model, data, config.batch, config.chunk) if in_window is None else
            PenalizedEvaluator(scoring_model, data, in_window, config.portable_weight, config.batch, config.chunk))
        self.log = None
        if comm.is_main:
            self.log = EvaluationLog(self.out_dir / LOG_FILE, self.state.log_bytes, len(self.state.records),
                                     rebuild=self.rebuilt_rows)
            if self.log.repaired:  # shown even without progress display: the user must know
                Console(stderr=True, soft_wrap=True).print(f"note: {self.log.repaired}", markup=False)
                self.state.log_bytes = self.log.size
        self.started = time.perf_counter()

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def save(self) -> None:
        self.state.rng = rng_to_json(self.rng)
        if self.comm.is_main:
            save_state(self.state, self.state_path)

    def complete_fitness(self, keys, estimated: bool = False) -> list[tuple[float, str]]:
        """(fitness, key) of the complete individuals among ``keys``, best first; with ``estimated``, dropped
        ones too, by their predicted fitness (the parent selection when ``estimated_parents`` is on)."""
        out = []
        for key in keys:
            record = self.state.records.get(key)
            if record is None:
                continue
            if record.complete:
                out.append((record.fitness, key))
            elif estimated and record.estimate is not None:
                out.append((record.estimate, key))
        return sorted(out)

    def budget_left(self) -> int:
        if self.config.max_evaluations is None:
            return 1 << 60
        return self.config.max_evaluations - len(self.state.records)

    # -- drawing candidates --------------------------------------------------------------------------------
    def initial_population(self) -> list[Genome]:
        population = [genome for _, genome in self.seeds][: self.config.population]
        self.state.seeds = {name: genome.key for name, genome in self.seeds}
        seen = set(population)
        attempts = 0
        while len(population) < self.config.population and attempts < MAX_DRAWS * self.config.population:
            attempts += 1
            child = mutate(self.rng.choice(population), self.space, self.rng, self.config.mutation_prob)
            if child not in seen:
                seen.add(child)
                population.append(child)
        return population

    def children(self) -> list[Genome]:
        parents = [Genome.from_key(k) for k in self.state.parents]
        seen = set(self.state.records)
        out: list[Genome] = []

        def draw(make) -> None:
            for _ in range(MAX_DRAWS):
                child = make()
                if child.key not in seen:
                    seen.add(child.key)
                    out.append(child)
                    return

        for _ in range(self.config.mutations):
            draw(lambda: mutate(self.rng.choice(parents), self.space, self.rng, self.config.mutation_prob))
        if len(parents) >= 2:
            for _ in range(self.config.crossovers):
                draw(lambda: crossover(*self.rng.sample(parents, 2), self.space, self.rng))
        return out

    def draw_generation(self) -> None:
        g = self.state.generation
        candidates = self.initial_population() if g == 0 else self.children()
        candidates = candidates[: max(0, self.budget_left())]
        keys = [c.key for c in candidates]
        rank = self.config.race_rank
        if g == 0 and self.config.racing and len(keys) > rank:
            # The first `rank` members (the seeds first) are scored fully; the rest race in groups of `rank`
            # against the rank-th best so far. Group bounds depend only on the config, never on batching.
            head = max(rank, len(self.seeds))
            self.state.groups = [keys[:head]] + [keys[i : i + rank] for i in range(head, len(keys), rank)]
        else:
            self.state.groups = [keys]
        self.state.stage = 0
        self.state.group_ready = False
        self.state.threshold = self.state.racing = None

    # -- racing reference ----------------------------------------------------------------------------------
    def setup_group(self) -> None:
        """Fix the racing rule of the group about to start.

        It races against the ``race_rank``-th best complete individual of the reference set (the parents; in
        the initial population, the groups before this one). With rank ``parents`` that is the worst parent: a
        candidate whose fitness is above it has ``parents`` better individuals and cannot be selected. The
        default, a quarter of the parents, asks a child to promise a place in that top before it is scored
        fully (with ``estimated_parents`` it may still become a parent by its predicted fitness).
        """
        rule = None
        if self.config.racing:
            if self.state.generation == 0:
                reference = [key for group in self.state.groups[: self.state.stage] for key in group]
            else:
                reference = self.state.parents
            rank = self.config.race_rank
            ranked = self.complete_fitness(reference)[:rank]
            if len(ranked) == rank:
                rows = [(fitness, self.state.records[key].per_doc) for fitness, key in ranked]
                rule = racing_rule(rows, self.config.racing_z)
        self.state.racing = None if rule is None else rule.to_json()
        self.state.threshold = None if rule is None else rule.threshold
        self.state.group_ready = True

    # -- evaluation ----------------------------------------------------------------------------------------
    def run_group(self, bar, task) -> None:
        group = self.state.groups[self.state.stage]
        rule = None if self.state.racing is None else RacingRule.from_json(self.state.racing)
        pending = [k for k in dict.fromkeys(group) if k not in self.state.records]
        per_round = self.config.batch * self.comm.world
        for start in range(0, len(pending), per_round):
            round_keys = pending[start : start + per_round]
            mine = round_keys[self.comm.rank * self.config.batch : (self.comm.rank + 1) * self.config.batch]
            before = self.evaluator.forward_tokens
            specs = [self.space.to_spec(Genome.from_key(k)) for k in mine]
            results = self.evaluator.evaluate(specs, rule) if specs else []
            shares = self.comm.all_gather(
                (
                    self.comm.rank,
                    [(k, r) for k, r in zip(mine, results)],
                    self.evaluator.forward_tokens - before,
                )
            )
            merged: dict[str, Evaluation] = {}
            for _, pairs, tokens in shares:
                merged.update(dict(pairs))
                self.state.forward_tokens += tokens
            rows = []
            for key in round_keys:
                result = merged[key]
                record = Record(
                    key=key,
                    per_doc=result.per_doc,
                    fitness=result.fitness,
                    complete=result.complete,
                    generation=self.state.generation,
                    tokens=result.tokens,
                    seconds=round(result.seconds, 4),
                    order=len(self.state.records),
                    estimate=result.estimate,
                    penalty=result.penalty,
                )
                self.state.records[key] = record
                rows.append(self.log_row(record))
            self.state.seconds += time.perf_counter() - self.started
            self.started = time.perf_counter()
            if self.log is not None:
                self.state.log_bytes = self.log.append(rows)
            self.save()
            if bar is not None:
                bar.update(task, advance=len(round_keys), best=self.best_text())

    def log_row(self, record: Record) -> dict:
        genome = Genome.from_key(record.key)
        seed = next((name for name, key in self.state.seeds.items() if key == record.key), None)
        return {
            "order": record.order,
            "generation": record.generation,
            "stage": self.state.stage,
            "genome": genome.to_json(),
            "seed": seed,
            "fitness": record.fitness,
            "perplexity": math.exp(record.fitness) if record.complete else None,
            "complete": record.complete,
            "estimate": record.estimate,
            "per_doc": record.per_doc,
            "tokens": record.tokens,
            "seconds": record.seconds,
            "threshold": self.state.threshold,
            **({"in_window_penalty": record.penalty} if record.penalty is not None else {}),
        }

    def rebuilt_rows(self) -> list[dict]:
        """The log rows of every record, for a log lost or damaged since the state was saved (the group stage
        and racing threshold of past rows are not kept in the state: null)."""
        records = sorted(self.state.records.values(), key=lambda r: r.order)
        return [{**self.log_row(r), "stage": None, "threshold": None, "rebuilt": True} for r in records]

    def best_text(self) -> str:
        ranked = self.complete_fitness(self.state.records)
        return f"{math.exp(ranked[0][0]):.3f}" if ranked else "-"

    def select(self) -> None:
        g = self.state.generation
        keys = list(self.state.parents) + [k for group in self.state.groups for k in group]
        ranked = self.complete_fitness(dict.fromkeys(keys), estimated=self.config.estimated_parents)
        self.state.parents = [key for _, key in ranked[: self.config.parents]]
        values = [f for f, _ in ranked[: self.config.parents]]
        complete = self.complete_fitness(self.state.parents)
        if values and complete:
            self.state.history.append(
                {
                    "generation": g,
                    "best": complete[0][0],
                    "median": statistics.median(values),
                    "worst_parent": values[-1],
                    "evaluations": len(self.state.records),
                    "forward_tokens": self.state.forward_tokens,
                    "seconds": round(self.state.seconds, 2),
                }
            )
            if not self.console.is_terminal:  # the live bar shows it otherwise
                self.console.print(
                    f"generation {g}: best ppl {math.exp(values[0]):.3f}, median parent ppl "
                    f"{math.exp(statistics.median(values)):.3f}, {len(self.state.records)} evaluations"
                )

    # -- driver --------------------------------------------------------------------------------------------
    def loop(self) -> None:
        state = self.state
        total = self.config.planned_evaluations()
        with search_progress(self.console) as bar:
            task = bar.add_task(
                self.title, total=total, completed=min(len(state.records), total), best=self.best_text()
            )
            while state.generation <= self.config.generations:
                if not state.groups:
                    if state.generation > 0 and self.budget_left() <= 0:
                        break
                    self.draw_generation()
                    self.save()
                while state.stage < len(state.groups):
                    if not state.group_ready:
                        self.setup_group()
                    self.run_group(bar, task)
                    state.stage += 1
                    state.group_ready, state.threshold, state.racing = False, None, None
                self.select()
                state.generation += 1
                state.groups, state.stage = [], 0
                self.save()
            state.done = True
            self.save()

    def finish(self) -> SearchResult:
        ranked = self.complete_fitness(self.state.parents) or self.complete_fitness(self.state.records)
        best_key = ranked[0][1] if ranked else None
        if best_key is None:
            raise LongRopeError("the search evaluated no complete candidate")
        genome = Genome.from_key(best_key)
        spec = self.space.to_spec(genome)
        paths = {
            "spec": self.out_dir / SPEC_FILE,
            "log": self.out_dir / LOG_FILE,
            "plot": self.out_dir / PLOT_FILE,
        }
        seeds = {
            name: self.state.records[key].fitness
            for name, key in self.state.seeds.items()
            if key in self.state.records and self.state.records[key].complete
        }
        result = SearchResult(
            spec=spec,
            fitness=self.state.records[best_key].fitness,
            genome=genome,
            seeds=seeds,
            history=list(self.state.history),
            evaluations=len(self.state.records),
            forward_tokens=self.state.forward_tokens,
            seconds=self.state.seconds,
            out_dir=self.out_dir,
            spec_path=paths["spec"],
            log_path=paths["log"],
            plot_path=paths["plot"],
            state_path=self.state_path,
        )
        if self.comm.is_main:
            save_spec(spec, paths["spec"])
            if self.state.history:
                plot_convergence(self.state.history, paths["plot"], self.title)
            summary = {
                "fitness": result.fitness,
                "perplexity": result.perplexity,
                "genome": genome.to_json(),
                "seed_fitness": seeds,
                "evaluations": result.evaluations,
                "forward_tokens": result.forward_tokens,
                "seconds": round(result.seconds, 2),
                "data": self.data.description,
                "space": self.space.describe(),
                "config": asdict(self.config),
                "history": result.history,
            }
            import json

            tmp = self.out_dir / f".{RESULT_FILE}.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            tmp.replace(self.out_dir / RESULT_FILE)
            self.console.print(
                f"best ppl {result.perplexity:.3f} (fitness {result.fitness:.4f}) after {result.evaluations} "
                f"evaluations, {result.forward_tokens:,} forward tokens, {result.seconds:.0f} s; spec: {paths['spec']}"
            )
        return result


def _execute(
    model, space, geometry, data, config, out_dir, resume, progress, comm, extra_seed, title, in_window=None
) -> SearchResult:
    comm = comm or init_from_env()
    run = _Run(model, space, geometry, data, config, Path(out_dir), resume, progress, comm, extra_seed, title,
               in_window)
    try:
        if not run.state.done or run.state.generation <= config.generations:
            run.state.done = False
            run.loop()
        return run.finish()
    finally:
        restore(run.evaluator.model)


def search(
    model,
    tokenizer,
    config: SearchConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    data: FitnessData | None = None,
    comm: Comm | None = None,
    in_window: FitnessData | None = None,
) -> SearchResult:
    """Search LongRoPE long factors for ``model`` at ``config``'s target length; write outputs to ``out_dir``.

    ``config.portable``: the factors serve at every length (`longrope.export.hf.portable_spec`) and the fitness
    adds ``portable_weight * max(0, in-window NLL - the model's own)`` on ``in_window`` documents cut to the
    original window (built from ``tokenizer`` when not given; `fitness.PenalizedEvaluator`).

    Outputs: ``best_spec.json`` (`longrope.rope.load_spec` reads it), ``evaluations.jsonl`` (every
    evaluation), ``convergence.png``, ``result.json`` and the state file ``search_state.json``.
    ``resume=True`` continues from the state file if there is one (a finished search just returns its
    result); without it an existing state file is an error (it is never overwritten). ``data`` replaces the
    documents built from ``tokenizer`` (tests). Under torchrun the ranks share the work (see `distributed`).
    """
    config.validate()
    geometry = model_geometry(model)
    factor, length = config.target(geometry.original_window)
    space = make_space(
        geometry,
        factor,
        lambda_max=config.lambda_max,
        search_n_hat=config.search_n_hat,
        search_attention=config.search_attention,
        attention_grid=(config.attention_min, config.attention_max),
        attention_factor=config.attention_factor,
        longrope2=config.longrope2,
        critical_pair=config.critical_pair,
        portable=config.portable,
    )
    extra = read_factor_file(config.factor_file, geometry) if config.factor_file else None
    if data is None:
        data = build_fitness_data(
            tokenizer, length, config.docs, config.corpus, config.split, config.data_seed, config.needle
        )
    elif data.length != length:
        raise LongRopeError(
            f"the fitness documents have {data.length} tokens but the target length is {length}"
        )
    if config.portable and in_window is None:
        in_window = build_fitness_data(tokenizer, geometry.original_window, config.docs, config.corpus,
                                       config.split, config.data_seed)
    title = (f"{'LongRoPE2' if config.longrope2 else 'LongRoPE'} {'portable ' if config.portable else ''}search "
             f"{factor:g}x ({length} tokens)")
    return _execute(model, space, geometry, data, config, out_dir, resume, progress, comm, extra, title,
                    in_window if config.portable else None)


def search_short(
    model,
    tokenizer,
    long_spec: LongRopeSpec,
    config: SearchConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    data: FitnessData | None = None,
    comm: Comm | None = None,
) -> SearchResult:
    """Search the short factors (used up to the original window L) of an extended model, long factors fixed.

    The paper's short-context recovery: fitness is the perplexity of documents cut to L tokens. The result's
    spec carries both lists. ``config.factor`` / ``target_length`` are ignored (the scale is ``long_spec``'s).
    """
    if not isinstance(long_spec, LongRopeSpec):
        raise LongRopeError(f"short factors complete a longrope spec, got {long_spec.method}")
    config = copy.copy(config)
    config.factor = long_spec.factor
    config.target_length = None
    config.validate()
    geometry = model_geometry(model)
    space = make_short_space(geometry, long_spec, config.lambda_max)
    length = geometry.original_window
    if data is None:
        data = build_fitness_data(
            tokenizer, length, config.docs, config.corpus, config.split, config.data_seed
        )
    elif data.length != length:
        raise LongRopeError(
            f"short-factor documents must have the original window's {length} tokens, got {data.length}"
        )
    title = f"short factors at {length} tokens"
    return _execute(model, space, geometry, data, config, out_dir, resume, progress, comm, None, title)


__all__ = ["SearchConfig", "SearchResult", "evaluation_model", "search", "search_short"]
