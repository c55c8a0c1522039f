"""One search run from start (or resume) to result: opening its state on every rank, evaluating each candidate
group across the ranks, and the generation loop; what to draw and keep is `generation`, what it writes `outputs`.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from pathlib import Path
from rich.console import Console

from longrope.attention.patch import restore
from longrope.errors import LongRopeError
from longrope.hardware import model_record
from longrope.interrupts import interrupts_deferred
from longrope.rope import RopeGeometry
from longrope.search.config import SearchConfig
from longrope.search.distributed import Comm, init_from_env
from longrope.search.fitness import Evaluation, Evaluator, FitnessData, PenalizedEvaluator, RacingRule
from longrope.search.generation import best_text, budget_left, draw_generation, select, setup_group
from longrope.search.outputs import SearchResult, baseline_specs, best_result, log_row, open_log, write_outputs
from longrope.search.pareto import ParetoRacingRule
from longrope.search.report import search_progress
from longrope.search.space import Genome, SearchSpace, seed_genomes
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


def forward_dtype(model, dtype: str | None) -> str:
    """The concrete dtype name (``fp32``, ``bf16``, ``fp16``) the forwards run in: ``dtype``, ``auto`` as
    `longrope.hardware` measures it for the model's device, or None for the model's own. The search hashes this
    name, so a resumed search keeps the dtype it started in."""
    from longrope.hardware import auto_dtype, dtype_name, parse_dtype

    param = next(model.parameters())
    if dtype is None:
        return dtype_name(param.dtype)
    return dtype_name(parse_dtype(dtype) or auto_dtype(param.device))


def evaluation_model(model, dtype: str):
    """The model the forwards run on: ``model`` itself when already in ``dtype``, else a cast copy."""
    from longrope.hardware import parse_dtype, warn_if_slow

    param = next(model.parameters())
    want = parse_dtype(dtype)
    if param.dtype == want:
        return model
    warn_if_slow(want, param.device)
    restore(model)
    return copy.deepcopy(model).to(want)


def open_state(path: Path, payload: dict, config_hash: str, seed: int, resume: bool, comm: Comm) -> SearchState:
    """The state of ``path`` (``resume``) or a fresh one, read on the main rank and broadcast; every rank fails
    together when it cannot be used."""
    loaded: tuple[str, object] = ("ok", None)
    if comm.is_main:
        try:
            if path.exists():
                if not resume:
                    raise LongRopeError(
                        f"{path} exists: resume it (--resume / resume=True), or choose another "
                        "output directory, or delete it"
                    )
                loaded = ("ok", load_state(path, config_hash))
            else:
                fresh = SearchState(config_hash=config_hash, config=payload, rng=rng_to_json(random.Random(seed)))
                loaded = ("ok", fresh)
        except LongRopeError as exc:
            loaded = ("error", str(exc))
    status, value = comm.broadcast(loaded)  # every rank fails together
    if status == "error":
        raise LongRopeError(value)
    return value


class SearchRun:
    """One search: space, data, state, evaluator, communication; `loop` drives it to the end, `finish` writes it."""

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
        config = dataclasses.replace(config, dtype=forward_dtype(model, config.dtype))
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
        self.state: SearchState = open_state(self.state_path, payload, self.config_hash, config.seed, resume, comm)
        self.rng = rng_from_json(self.state.rng)
        self.seeds = seed_genomes(space, geometry, extra_seed)
        scoring_model = evaluation_model(model, config.dtype)
        self.evaluator = (
            Evaluator(scoring_model, data, config.batch, config.chunk) if in_window is None else
            PenalizedEvaluator(scoring_model, data, in_window, config.portable_weight, config.batch, config.chunk))
        self.log = open_log(self.out_dir, self.state) if comm.is_main else None
        self.started = time.perf_counter()

    def save(self) -> None:
        self.state.rng = rng_to_json(self.rng)
        if self.comm.is_main:
            save_state(self.state, self.state_path)

    # -- evaluation ----------------------------------------------------------------------------------------
    def affordable(self) -> int:
        """How many more candidates ``max_forward_tokens`` pays for even if each is scored on every document."""
        cap = self.config.max_forward_tokens
        if cap is None:
            return 1 << 60
        return max(0, cap - self.state.forward_tokens) // (self.data.docs * self.data.length)

    def run_group(self, bar, task) -> None:
        """Evaluate the pending candidates of the current group, ``batch`` per rank per round; after every round
        all ranks hold the same records, the main rank appends them to the log, and the state is saved."""
        group = self.state.groups[self.state.stage]
        rule = None
        if self.state.racing is not None:
            kind = ParetoRacingRule if self.state.racing.get("kind") == "pareto" else RacingRule
            rule = kind.from_json(self.state.racing)
        pending = [k for k in dict.fromkeys(group) if k not in self.state.records]
        per_round = self.config.batch * self.comm.world
        for start in range(0, len(pending), per_round):
            round_keys = pending[start : start + per_round][: self.affordable()]
            if not round_keys:  # the token budget is spent: the rest of the generation is never evaluated
                stage = self.state.stage
                self.state.groups[stage] = [k for k in group if k in self.state.records]
                self.state.groups[stage + 1 :] = [[] for _ in self.state.groups[stage + 1 :]]
                self.save()
                break
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
                    needle_per_doc=result.needle_per_doc,
                    needle=result.needle,
                    needle_estimate=result.needle_estimate,
                )
                self.state.records[key] = record
                rows.append(log_row(self.state, record))
            self.state.seconds += time.perf_counter() - self.started
            self.started = time.perf_counter()
            with interrupts_deferred():  # the log's new rows and the state that counts them, or neither
                if self.log is not None:
                    self.state.log_bytes = self.log.append(rows)
                self.save()
            if bar is not None:
                bar.update(task, advance=len(round_keys), best=best_text(self.state))

    def run_baselines(self) -> None:
        """Two objectives: score the baseline methods (`outputs.baseline_specs`) once on the same documents, dealt
        over the ranks like candidates; kept in the state (a resumed or extended search does not repeat them)."""
        if not self.config.two_objectives or self.state.baselines is not None:
            return
        import warnings

        specs = baseline_specs(self.space.factor, self.geometry.original_window, self.space.fixed_long)
        names = list(specs)
        mine = names[self.comm.rank :: self.comm.world]
        before = self.evaluator.forward_tokens
        with warnings.catch_warnings():  # no scaling beyond its window is a baseline here on purpose
            warnings.simplefilter("ignore", UserWarning)
            results = self.evaluator.evaluate([specs[n] for n in mine]) if mine else []
        shares = self.comm.all_gather(([(n, [r.fitness, r.needle]) for n, r in zip(mine, results)],
                                       self.evaluator.forward_tokens - before))
        merged = {}
        for pairs, tokens in shares:
            merged.update(dict(pairs))
            self.state.baseline_tokens += tokens
        self.state.baselines = {n: merged[n] for n in names}
        self.save()

    # -- driver --------------------------------------------------------------------------------------------
    def loop(self) -> None:
        state, config = self.state, self.config
        total = config.planned_evaluations()
        with search_progress(self.console) as bar:
            task = bar.add_task(
                self.title, total=total, completed=min(len(state.records), total), best=best_text(state)
            )
            while state.generation <= config.generations:
                if not state.groups:
                    if state.generation > 0 and (budget_left(state, config) <= 0 or not self.affordable()):
                        break
                    draw_generation(state, config, self.space, self.rng, self.seeds)
                    self.save()
                while state.stage < len(state.groups):
                    if not state.group_ready:
                        setup_group(state, config)
                    self.run_group(bar, task)
                    state.stage += 1
                    state.group_ready, state.threshold, state.racing = False, None, None
                select(state, config, self.console)
                state.generation += 1
                state.groups, state.stage = [], 0
                self.save()
            self.run_baselines()
            state.done = True
            self.save()

    def finish(self) -> SearchResult:
        self.run_baselines()  # a state finished before they existed
        result = best_result(self.state, self.space, self.out_dir, self.state_path)
        if self.comm.is_main:
            write_outputs(result, self.data, self.space, self.config, self.title, self.console,
                          model_record(self.evaluator.model))
        return result


def execute(
    model, space, geometry, data, config, out_dir, resume, progress, comm, extra_seed, title, in_window=None
) -> SearchResult:
    """Run (or resume) a search to its end and return its result; the patched model is always restored."""
    comm = comm or init_from_env()
    run = SearchRun(model, space, geometry, data, config, Path(out_dir), resume, progress, comm, extra_seed, title,
                    in_window)
    try:
        if not run.state.done or run.state.generation <= config.generations:
            run.state.done = False
            run.loop()
        return run.finish()
    finally:
        restore(run.evaluator.model)
