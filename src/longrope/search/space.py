"""The search space of the LongRoPE evolutionary search: individuals, their bounds, and the seeds.

An individual (`Genome`) holds the rescale factors of the *searched* pairs as integer hundredths (a 0.01 grid
with no float drift), non-decreasing in the pair index, optionally an ``n_hat`` from `N_HAT_CHOICES` and an
attention factor (hundredths) when that is searched too. `SearchSpace` knows the bounds and how to turn a
genome into a `LongRopeSpec`:

- LongRoPE (paper): every pair searched in ``[1, lambda_max]`` (default ``1.25 * s``).
- LongRoPE2: only pairs ``>= c`` (the critical pair) are searched, in ``[s, 2s]``; lower pairs follow NTK,
  ``lambda_i = lambda_c ** (i / c)``. ``c`` is fixed (the theoretical critical pair, or the user's), or, as
  published, part of the genome: one of `RopeGeometry.critical_candidates` (from the pair with ten periods inside
  the window up to the theoretical one), chosen by the fitness like every factor. The genome then holds the
  factors of pairs ``c..d/2-1`` only, so its length varies with ``c``.
- Short factors: the factors used inside the original window, with the long factors fixed.

Seeds: PI, NTK and YaRN factor tables from `longrope.rope.rescale_factors`, snapped to the grid and clipped
into range, plus an optional user factor file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from longrope.errors import LongRopeError
from longrope.rope.preset_files import is_preset_name, read_preset
from longrope.schema import describe, problem, read_document
from longrope.rope import (
    LinearSpec,
    LongRopeSpec,
    NTKSpec,
    RopeGeometry,
    YarnSpec,
    longrope_attention_factor,
    rescale_factors,
    spec_from_dict,
)

N_HAT_CHOICES: tuple[int, ...] = (0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 64, 128, 256)
GRID = 100  # factors are stored as integer multiples of 1/GRID


def to_grid(value: float) -> int:
    return int(round(value * GRID))


def from_grid(value: int) -> float:
    return value / GRID


@dataclass(frozen=True, order=True)
class Genome:
    """One individual: searched factors in hundredths (non-decreasing), n_hat, attention factor in hundredths,
    and LongRoPE2's critical pair.

    ``attention`` is None when the attention factor is not searched (the space's fixed policy applies);
    ``critical`` is None unless the critical pair is searched (then ``factors`` are those of pairs ``critical..``).
    """

    factors: tuple[int, ...]
    n_hat: int = 0
    attention: int | None = None
    critical: int | None = None

    @property
    def key(self) -> str:
        """A stable text key (the evaluated-genomes dict and the state file use it); the critical pair is a
        fourth field only when searched, so keys of searches without it are unchanged."""
        att = "-" if self.attention is None else str(self.attention)
        key = f"{','.join(map(str, self.factors))}|{self.n_hat}|{att}"
        return key if self.critical is None else f"{key}|{self.critical}"

    def to_json(self) -> dict:
        out = {"factors": list(self.factors), "n_hat": self.n_hat, "attention": self.attention}
        if self.critical is not None:
            out["critical"] = self.critical
        return out

    @classmethod
    def from_json(cls, data: dict) -> Genome:
        att, critical = data.get("attention"), data.get("critical")
        return cls(
            tuple(int(v) for v in data["factors"]),
            int(data.get("n_hat", 0)),
            None if att is None else int(att),
            None if critical is None else int(critical),
        )

    @classmethod
    def from_key(cls, key: str) -> Genome:
        factors, n_hat, att, *critical = key.split("|")
        return cls(tuple(int(v) for v in factors.split(",")), int(n_hat), None if att == "-" else int(att),
                   int(critical[0]) if critical else None)


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of the searched values and the map genome -> `LongRopeSpec`.

    pairs: rotary pairs d/2 of the model. first_pair: first searched pair (0, or LongRoPE2's critical pair; when
    the critical pair is searched, the one the seeds use). critical_choices: the critical pairs a genome may
    choose (LongRoPE2 with the critical pair searched), else ``()``: every genome starts at ``first_pair``.
    low / high: bounds of the searched factors, in hundredths. n_hat_choices: allowed n_hat values ((0,) when
    n_hat is not searched). attention_range: (low, high) hundredths when the attention factor is searched,
    else None and ``attention_factor`` (None = LongRoPE's "su" policy) applies. factor: s.
    mode: "long" (factors are the long factors) or "short" (factors are the short factors; ``fixed_long``
    holds the long spec they complete). portable: long mode whose specs use the long factors as the short ones
    too (one table at every length, `longrope.export.hf.portable_spec`).
    """

    pairs: int
    factor: float
    original_window: int
    low: int
    high: int
    first_pair: int = 0
    n_hat_choices: tuple[int, ...] = (0,)
    attention_range: tuple[int, int] | None = None
    attention_factor: float | None = None
    mode: str = "long"
    fixed_long: LongRopeSpec | None = field(default=None, compare=False)
    portable: bool = False
    critical_choices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.first_pair < self.pairs:
            raise LongRopeError(f"first searched pair {self.first_pair} is outside 0..{self.pairs - 1}")
        if self.critical_choices:
            if any(not 0 < c < self.pairs for c in self.critical_choices):
                raise LongRopeError(f"critical pair candidates {self.critical_choices} must lie in 1..{self.pairs - 1}")
            if self.first_pair not in self.critical_choices:
                raise LongRopeError(f"the seeds' critical pair {self.first_pair} is not among the candidates "
                                    f"{self.critical_choices}")
        if not 1 <= self.low <= self.high:
            raise LongRopeError(
                f"search range [{from_grid(self.low)}, {from_grid(self.high)}] is empty or below 1"
            )
        if self.attention_range is not None and not 0 < self.attention_range[0] <= self.attention_range[1]:
            raise LongRopeError(f"attention factor range {self.attention_range} is empty")
        if self.mode not in ("long", "short"):
            raise LongRopeError(f"unknown search mode {self.mode!r}")
        if self.mode == "short" and self.fixed_long is None:
            raise LongRopeError("a short-factor search needs the long factors it completes")

    # -- shape ---------------------------------------------------------------------------------------------
    @property
    def searched(self) -> int:
        """How many pairs a genome at ``first_pair`` holds (`length` gives any genome's)."""
        return self.pairs - self.first_pair

    @property
    def critical_searched(self) -> bool:
        return bool(self.critical_choices)

    def critical_of(self, genome: Genome) -> int:
        """The first searched pair of ``genome``: its own critical pair when that is searched, else ``first_pair``."""
        return self.first_pair if genome.critical is None else genome.critical

    def length(self, critical: int) -> int:
        """How many factors a genome whose critical pair is ``critical`` holds."""
        return self.pairs - critical

    @property
    def n_hat_searched(self) -> bool:
        return len(self.n_hat_choices) > 1

    def contains(self, genome: Genome) -> bool:
        f = genome.factors
        if self.critical_searched != (genome.critical is not None):
            return False
        if genome.critical is not None and genome.critical not in self.critical_choices:
            return False
        ok = (
            len(f) == self.length(self.critical_of(genome))
            and all(isinstance(v, int) for v in f)
            and all(self.low <= v <= self.high for v in f)
            and all(a <= b for a, b in zip(f, f[1:]))
            and genome.n_hat in self.n_hat_choices
        )
        if self.attention_range is None:
            return ok and genome.attention is None
        return (
            ok
            and genome.attention is not None
            and self.attention_range[0] <= genome.attention <= self.attention_range[1]
        )

    def snap(self, values) -> tuple[int, ...]:
        """Real factors -> grid values: rounded to 0.01, clipped into [low, high], made non-decreasing."""
        out, previous = [], self.low
        for v in values:
            g = min(max(to_grid(float(v)), self.low), self.high)
            previous = max(previous, g)
            out.append(previous)
        return tuple(out)

    def snap_attention(self, value: float | None) -> int | None:
        if self.attention_range is None:
            return None
        if value is None:
            value = longrope_attention_factor(self.factor, self.original_window)
        return min(max(to_grid(value), self.attention_range[0]), self.attention_range[1])

    # -- genome -> spec ------------------------------------------------------------------------------------
    def factors(self, genome: Genome) -> tuple[float, ...]:
        """The full per-pair factor list [d/2] of a genome (LongRoPE2: NTK-style below the critical pair)."""
        searched = [from_grid(v) for v in genome.factors]
        c = self.critical_of(genome)
        if c == 0:
            return tuple(searched)
        lam_c = searched[0]
        lower = [lam_c ** (i / c) for i in range(c)]
        return tuple(lower + searched)

    def attention(self, genome: Genome) -> float | None:
        return from_grid(genome.attention) if genome.attention is not None else self.attention_factor

    def to_spec(self, genome: Genome) -> LongRopeSpec:
        if self.mode == "short":
            long = self.fixed_long
            return LongRopeSpec(
                long_factor=long.long_factor,
                short_factor=self.factors(genome),
                n_hat=long.n_hat,
                factor=long.factor,
                attention_factor=long.attention_factor,
                original_window=self.original_window,
            )
        factors = self.factors(genome)
        return LongRopeSpec(
            long_factor=factors,
            short_factor=factors if self.portable else None,
            n_hat=genome.n_hat,
            factor=self.factor,
            attention_factor=self.attention(genome),
            original_window=self.original_window,
        )

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "pairs": self.pairs,
            "first_pair": self.first_pair,
            "range": [from_grid(self.low), from_grid(self.high)],
            "n_hat_choices": list(self.n_hat_choices),
            "attention_range": None
            if self.attention_range is None
            else [from_grid(v) for v in self.attention_range],
            "attention_factor": self.attention_factor,
            "factor": self.factor,
            "original_window": self.original_window,
            "fixed_long": None if self.fixed_long is None else self.fixed_long.to_dict(),
            **({"portable": True} if self.portable else {}),  # absent when off: older states keep their hash
            **({"critical_choices": list(self.critical_choices)} if self.critical_choices else {}),  # idem
        }


def make_space(
    geometry: RopeGeometry,
    factor: float,
    *,
    lambda_max: float | None = None,
    search_n_hat: bool = False,
    search_attention: bool = False,
    attention_grid: tuple[float, float] = (1.0, 1.6),
    attention_factor: float | None = None,
    longrope2: bool = False,
    critical_pair: int | None = None,
    portable: bool = False,
    search_critical: bool = False,
) -> SearchSpace:
    """The long-factor search space for scale ``factor`` (s) on a model of ``geometry`` (``portable``: specs
    with one table, the long factors also as the short ones). ``longrope2`` with ``search_critical``: the critical
    pair is part of the genome, one of `RopeGeometry.critical_candidates` (``critical_pair``, when given, is then
    the one the seeds start from and must be a candidate; default: the theoretical one)."""
    if not factor > 1:
        raise LongRopeError(
            f"the target length must be above the original window {geometry.original_window} (scale {factor} <= 1)"
        )
    first = 0
    choices: tuple[int, ...] = ()
    if search_critical and not longrope2:
        raise LongRopeError("searching the critical pair is part of LongRoPE2: add --longrope2 (longrope2=True)")
    if longrope2:
        first = geometry.critical_pair if critical_pair is None else int(critical_pair)
        if search_critical:
            choices = geometry.critical_candidates
            if critical_pair is None:
                first = choices[-1]  # the theoretical pair, clipped into 1..d/2-1
            elif first not in choices:
                raise LongRopeError(f"critical pair {first} is not one of LongRoPE2's candidates {choices[0]}.."
                                    f"{choices[-1]} (ten periods inside the window up to the theoretical one)")
        if not 0 < first < geometry.pairs:
            raise LongRopeError(
                f"critical pair {first} must lie in 1..{geometry.pairs - 1} (the model has {geometry.pairs} pairs)"
            )
        low, high = math.ceil(factor * GRID - 1e-9), math.floor(2 * factor * GRID + 1e-9)
    else:
        high_value = 1.25 * factor if lambda_max is None else lambda_max
        if not high_value >= 1:
            raise LongRopeError(f"lambda_max must be >= 1, got {high_value}")
        low, high = GRID, math.floor(high_value * GRID + 1e-9)
    att = None
    if search_attention:
        a, b = attention_grid
        att = (to_grid(a), to_grid(b))
    return SearchSpace(
        pairs=geometry.pairs,
        factor=float(factor),
        original_window=geometry.original_window,
        low=low,
        high=high,
        first_pair=first,
        n_hat_choices=N_HAT_CHOICES if search_n_hat else (0,),
        attention_range=att,
        attention_factor=attention_factor,
        portable=portable,
        critical_choices=choices,
    )


def make_short_space(
    geometry: RopeGeometry, long_spec: LongRopeSpec, lambda_max: float | None = None
) -> SearchSpace:
    """Space of short factors (used at or below the original window) completing ``long_spec``."""
    if len(long_spec.long_factor) != geometry.pairs:
        raise LongRopeError(
            f"the long spec has {len(long_spec.long_factor)} factors but the model has {geometry.pairs} rotary pairs"
        )
    high_value = max(long_spec.long_factor) if lambda_max is None else lambda_max
    high = max(GRID, math.floor(high_value * GRID + 1e-9))
    return SearchSpace(
        pairs=geometry.pairs,
        factor=long_spec.factor,
        original_window=geometry.original_window,
        low=GRID,
        high=high,
        mode="short",
        fixed_long=long_spec,
    )


# -- seeds ------------------------------------------------------------------------------------------------


def read_factor_file(path: str | Path, geometry: RopeGeometry) -> tuple[float, ...]:
    """Per-pair factors from a JSON list, from a spec file (LongRoPE: its long factors; others: their table) or
    from a shipped preset named by ``path``."""
    path = Path(path)
    try:
        data = read_preset(str(path))["spec"] if is_preset_name(str(path)) else read_document(path, "factor file",
                                                                                              "json")
    except KeyError as exc:
        raise LongRopeError(f"cannot read factor file {path}: {exc}") from None
    if isinstance(data, dict) and "long_factor" in data and "method" not in data:
        data = data["long_factor"]  # a bare rope_parameters-like dict
    if isinstance(data, dict):
        try:
            spec = spec_from_dict(data)
        except LongRopeError as exc:
            raise LongRopeError(f"factor file {path}: {exc}") from None
        values = rescale_factors(spec.with_window(geometry.original_window), geometry)[0].tolist()
    elif isinstance(data, list):
        found = problem(data, list[float], "factors")  # no strings, booleans, NaN or nested lists
        if found:
            raise LongRopeError(f"factor file {path}: {found}")
        values = data
    else:
        raise LongRopeError(f"factor file {path}: expected a JSON list of factors or a spec object, found "
                            f"{describe(data)}")
    values = [float(v) for v in values]
    if len(values) != geometry.pairs:
        raise LongRopeError(
            f"factor file {path} has {len(values)} factors but the model has {geometry.pairs} rotary pairs "
            f"(rotary dimension {geometry.dim}); give one factor per pair"
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise LongRopeError(f"factor file {path}: factors must be finite and > 0")
    return tuple(values)


def method_tables(geometry: RopeGeometry, factor: float) -> dict[str, tuple[tuple[float, ...], float]]:
    """PI, NTK and YaRN as (per-pair factors [d/2], attention factor), from `longrope.rope.rescale_factors`."""
    window = geometry.original_window
    out = {}
    for name, spec in (
        ("pi", LinearSpec(factor=factor, original_window=window)),
        ("ntk", NTKSpec(factor=factor, original_window=window)),
        ("yarn", YarnSpec(factor=factor, original_window=window)),
    ):
        table, attention = rescale_factors(spec, geometry)
        out[name] = (tuple(table.tolist()), float(attention))
    return out


def seed_genomes(
    space: SearchSpace, geometry: RopeGeometry, extra: tuple[float, ...] | None = None
) -> list[tuple[str, Genome]]:
    """Named seeds, snapped onto the grid: PI, NTK, YaRN (and ``extra``, a user table) — duplicates dropped.

    Short mode seeds: plain RoPE (all ones), the long factors clipped into range, and their square root.
    When the attention factor is searched, each table is seeded with the "su" policy value and YaRN also with
    its own attention factor.
    """
    c = space.first_pair
    critical = c if space.critical_searched else None
    named: list[tuple[str, Genome]] = []
    su = space.snap_attention(None)
    if space.mode == "short":
        long = space.fixed_long.long_factor
        tables = {"none": [1.0] * space.pairs, "long": list(long), "sqrt-long": [math.sqrt(v) for v in long]}
        for name, table in tables.items():
            named.append((name, Genome(space.snap(table[c:]), 0, su)))
    else:
        for name, (table, attention) in method_tables(geometry, space.factor).items():
            named.append((name, Genome(space.snap(table[c:]), 0, su, critical)))
            if space.attention_range is not None and name == "yarn":
                named.append(
                    ("yarn-attention", Genome(space.snap(table[c:]), 0, space.snap_attention(attention), critical))
                )
    if extra is not None:
        named.append(("user", Genome(space.snap(extra[c:]), 0, su, critical)))
    seen, out = set(), []
    for name, genome in named:
        if genome not in seen:
            seen.add(genome)
            out.append((name, genome))
    return out
