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
  `benchmarks/bench_search.py` measured 0.48x (previous built-in model) and 0.56x (shipped model) the forward
  tokens at best fitness equal within the seed spread (BENCHMARKS.md section 3). The
  initial population is raced too: its first ``racing_rank`` members (the seeds first) are scored fully,
  the rest in groups against the best so far. Rules are fixed when a candidate group starts, so results do
  not depend on batching, on the number of ranks, or on interruptions;
- batching: ``batch`` candidates per forward, one RoPE table per row;
- forwards in the dtype measured fastest on the device (bf16 on a bf16-fast CPU or a GPU), the loss in fp32.

This module is the public face: `SearchConfig` (every option, its checks and the hashed part) and the entry
points `search` / `search_short`, which build the space and the documents. The run itself is split by idea:
`run` (state on every rank, distributed evaluation, the generation loop), `generation` (drawing candidates,
racing rules, selection) and `outputs` (log rows, best_spec.json, result.json, the plot, `SearchResult`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from longrope.attention.patch import model_geometry
from longrope.errors import LongRopeError
from longrope.rope import LongRopeSpec
from longrope.schema import field_types, problem
from longrope.search.distributed import Comm
from longrope.search.fitness import FitnessData, build_fitness_data
from longrope.search.generation import MAX_DRAWS  # noqa: F401  (re-exported: defined here before the split)
from longrope.search.outputs import LOG_FILE, PLOT_FILE, RESULT_FILE, SPEC_FILE  # noqa: F401  (idem)
from longrope.search.outputs import SearchResult
from longrope.search.run import evaluation_model, execute
from longrope.search.space import make_short_space, make_space, read_factor_file
from longrope.validation import check_number

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
    forwards in ``dtype`` (``auto``: `longrope.hardware`'s measured choice for the model's device; None: the
    model's own). ``racing_rank`` (default: a quarter of ``parents``;
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
    dtype: str | None = "auto"
    factor_file: str | None = None
    chunk: int = 1024

    def validate(self) -> None:
        """Raise `LongRopeError` for settings no model can make work; needs no model, so callers check early.

        First each field's type (`longrope.schema`, as a ``--config`` file or a plan is checked): from Python too,
        ``racing="false"`` or ``generations=2.5`` is refused rather than read as true or cut to 2."""
        self._check_types()
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
            check_number(name, getattr(self, name))  # a plan file can hold any type, even NaN
            if getattr(self, name) < 1:
                raise LongRopeError(
                    f"{name} must be >= 1 (got {getattr(self, name)}): the search budget is zero"
                )
        for name in ("generations", "mutations", "crossovers"):
            check_number(name, getattr(self, name), minimum=0)
        check_number("max_evaluations", self.max_evaluations)
        check_number("mutation_prob", self.mutation_prob)
        check_number("chunk", self.chunk, minimum=1)
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
        if self.factor is not None and self.target_length is not None:
            raise LongRopeError(f"give the scale once: factor ({self.factor:g}, --factor) or target_length "
                                f"({self.target_length}, --length), not both")

    def _check_types(self) -> None:
        import torch

        for name, hint in field_types(SearchConfig).items():
            value = getattr(self, name)
            if name in ("corpus", "factor_file") and isinstance(value, os.PathLike):
                continue  # a path object where the file formats give its string
            if name == "dtype" and isinstance(value, torch.dtype):
                continue
            found = problem(value, hint, name)
            if found:
                raise LongRopeError(found)

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
    return execute(model, space, geometry, data, config, out_dir, resume, progress, comm, extra, title,
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
    return execute(model, space, geometry, data, config, out_dir, resume, progress, comm, None, title)


__all__ = ["SearchConfig", "SearchResult", "evaluation_model", "search", "search_short"]
