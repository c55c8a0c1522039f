"""Every option of the search in one validated dataclass, `SearchConfig` (as `longrope.train.config` is for
fine-tuning): its checks, the target length it implies and the part of it a resumed search must agree with.

It imports nothing else of `longrope.search`, so every module of the search can name it without an import ring.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from longrope.errors import LongRopeError
from longrope.schema import field_types, problem
from longrope.validation import check_number

OBJECTIVES = ("ppl", "ppl+needle")
# Fields that do not change the result and may differ between a run and its resume.
_UNHASHED = ("batch", "chunk", "generations", "max_evaluations", "max_forward_tokens")


@dataclass
class SearchConfig:
    """Every option of the search. Give ``factor`` (s) or ``target_length`` (L' = s * L).

    Budget: ``population`` initial individuals, then ``generations`` generations of ``mutations`` +
    ``crossovers`` children with ``parents`` kept; ``max_evaluations`` caps the number of evaluations and
    ``max_forward_tokens`` the tokens the candidates' forwards may cost (a candidate starts only if the budget
    left pays for it on every document, so the search never spends more; the rest of its generation is not
    evaluated; baselines of a two-objective search are counted apart).
    Space: factors in [1, ``lambda_max``] (default 1.25*s) on a 0.01 grid; ``search_n_hat`` adds n_hat (not
    exportable to transformers when > 0); ``search_attention`` searches the attention factor on
    [``attention_min``, ``attention_max``]; otherwise ``attention_factor`` (None: the "su" policy).
    ``longrope2``: only pairs >= ``critical_pair`` (default: the theoretical one) searched, in [s, 2s]; with
    ``search_critical`` (LongRoPE2 as published) the critical pair is searched too, among
    `RopeGeometry.critical_candidates` (``critical_pair``, if given, is where the seeds start).
    Fitness: ``docs`` documents of ``corpus``/``split`` (never test) cut to the target length; ``needle``
    scores only planted pass-key digits. ``objective``: ``ppl`` (one objective, the document perplexity) or
    ``ppl+needle``: two objectives from the same forward of the same documents, the perplexity of their natural
    text and LongRoPE2's needle-driven perplexity of ``needles_per_doc`` needles planted in each at depths covering
    the whole prompt; the search keeps a Pareto front and ships the spec `longrope.search.pareto.choose` picks
    (baselines evaluated on the same documents). Speed: ``batch`` candidates per forward, ``racing`` with the
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
    max_forward_tokens: int | None = None
    lambda_max: float | None = None
    search_n_hat: bool = False
    search_attention: bool = False
    attention_min: float = 1.0
    attention_max: float = 1.6
    attention_factor: float | None = None
    longrope2: bool = False
    critical_pair: int | None = None
    search_critical: bool = False
    docs: int = 5
    corpus: str = "stdlib"
    split: str = "validation"
    data_seed: int = 0
    needle: bool = False
    objective: str = "ppl"
    needles_per_doc: int = 4
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
        check_number("max_forward_tokens", self.max_forward_tokens, minimum=1)
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
        if self.objective not in OBJECTIVES:
            raise LongRopeError(f"unknown objective {self.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        check_number("needles_per_doc", self.needles_per_doc, minimum=1)
        if self.two_objectives and self.needle:
            raise LongRopeError("--needle (pass keys only) and --objective ppl+needle exclude each other: the two-"
                                "objective search already scores planted needles beside the document perplexity")
        if self.two_objectives and self.portable:
            raise LongRopeError("--portable is a one-objective search (its penalty adds to the perplexity); use "
                                "--objective ppl")
        if self.search_attention and self.attention_factor is not None:
            raise LongRopeError(f"attention_factor {self.attention_factor:g} (--attention-factor) fixes what "
                                "search_attention (--search-attention) would search: give one of them")
        if self.search_critical and not self.longrope2:
            raise LongRopeError("searching the critical pair (--search-critical) is part of LongRoPE2: add --longrope2")
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
        if not self.search_critical:  # idem
            del out["search_critical"]
        if not self.two_objectives:  # idem
            del out["objective"], out["needles_per_doc"]
        return out

    @property
    def two_objectives(self) -> bool:
        return self.objective == "ppl+needle"

    def planned_evaluations(self) -> int:
        total = self.population + self.generations * (self.mutations + self.crossovers)
        return total if self.max_evaluations is None else min(total, self.max_evaluations)


__all__ = ["SearchConfig"]
