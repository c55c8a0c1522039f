"""Two objectives in one search: the Pareto front, NSGA-II selection, racing on both objectives, and the rule that
picks the shipped spec from the front.

The objectives (both lower-better, both from the same forward of the same documents, `fitness.FitnessData` with a
needle mask): the **document NLL** (log perplexity of the natural text tokens) and the **needle NLL** (LongRoPE2's
needle-driven perplexity: the answer tokens of needles planted at every depth, `longrope.data.needles`). A point
``a`` dominates ``b`` when it is no worse in both and better in one.

- Selection (NSGA-II, Deb et al. 2002): the pool (old parents and the generation's candidates) is sorted into
  non-dominated fronts; whole fronts fill the parent set in order, and the front that does not fit whole is cut by
  crowding distance (the ends of a front first, then the members with the most room around them). `pareto_order`
  is that order, so ``pareto_order(...)[:parents]`` is NSGA-II's selection.
- Racing (`ParetoRacingRule`): a candidate is dropped once it is (provably, or almost surely by the predictive rule
  of `fitness.RacingRule` applied to each objective) dominated by at least ``rank`` reference individuals (the
  parents). Everything dominating a candidate sits in an earlier front, so with ``rank = parents`` a dropped
  candidate could never have been selected: the reference algorithm's selection is kept, as with one objective.
- The shipped spec (`choose`, the rule fixed before any run): **the lowest document perplexity among the front
  members whose needle NLL is at most the best baseline's** (no scaling, PI, NTK, dynamic NTK, YaRN, evaluated
  exactly on the same documents); **if no member retrieves that well, the member with the best needle NLL**.
  The search documents are validation documents; claims are made on the test split afterwards.

Own code rather than Optuna's NSGA-II sampler (not installed here; its ask/tell would still need our racing,
the monotone 0.01 grid of the genome, de-duplication and the resumable state): sorting and crowding are ~60 lines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from longrope.search.fitness import paired_spread

Point = tuple[float, float]  # (document NLL, needle NLL)

SELECTION_RULE = (
    "lowest document perplexity among the front members whose needle NLL (answer tokens of the needles planted in "
    "the search's validation documents) is at most the best baseline's on the same documents; if none, the member "
    "with the lowest needle NLL"
)


def dominates(a: Point, b: Point) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def non_dominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """Indices of ``points`` by front: the first front is the non-dominated set, the next the non-dominated set
    of the rest, and so on (each front in index order)."""
    n = len(points)
    dominated_by = [0] * n  # how many points dominate i
    dominating: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominating[i].append(j)
                dominated_by[j] += 1
            elif dominates(points[j], points[i]):
                dominating[j].append(i)
                dominated_by[i] += 1
    fronts, current = [], [i for i in range(n) if dominated_by[i] == 0]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominating[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each member of ``front``: the ends of each objective get infinity, the others
    the sum over objectives of the gap between their neighbours, normalised by the front's range."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for m in range(2):
        ranked = sorted(front, key=lambda i: (points[i][m], points[i][1 - m], i))
        low, high = points[ranked[0]][m], points[ranked[-1]][m]
        distance[ranked[0]] = distance[ranked[-1]] = math.inf
        if high == low:
            continue
        for before, i, after in zip(ranked, ranked[1:], ranked[2:]):
            distance[i] += (points[after][m] - points[before][m]) / (high - low)
    return distance


def pareto_order(points: Sequence[Point], keys: Sequence[str] | None = None) -> list[int]:
    """Indices best first: by front, then by crowding distance (largest first), then by the point and ``keys``
    (a fixed order for ties, so runs and resumes agree)."""
    keys = list(keys) if keys is not None else [str(i) for i in range(len(points))]
    order: list[int] = []
    for front in non_dominated_sort(points):
        distance = crowding_distance(points, front)
        order += sorted(front, key=lambda i: (-distance[i], points[i], keys[i]))
    return order


def first_front(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points, by document NLL (then needle NLL, index)."""
    fronts = non_dominated_sort(points)
    return sorted(fronts[0], key=lambda i: (points[i], i)) if fronts else []


@dataclass(frozen=True)
class Choice:
    """The member the selection rule picked (its index in the front given), and why."""

    index: int
    met_baseline: bool  # its needle NLL is at most the best baseline's
    best_baseline: str | None
    best_baseline_needle: float | None

    @property
    def reason(self) -> str:
        if self.best_baseline is None:
            return "no baseline given: the lowest document perplexity of the front"
        if self.met_baseline:
            return (f"the lowest document perplexity among the front members whose needle NLL is at most the best "
                    f"baseline's ({self.best_baseline}, {self.best_baseline_needle:.4f})")
        return (f"no front member reaches the best baseline's needle NLL ({self.best_baseline}, "
                f"{self.best_baseline_needle:.4f}): the member with the lowest needle NLL")


def choose(front: Sequence[Point], baselines: Mapping[str, Point]) -> Choice:
    """`SELECTION_RULE` applied to the points of a front and the baselines' points on the same documents."""
    if not front:
        raise ValueError("the front is empty")
    if not baselines:
        return Choice(min(range(len(front)), key=lambda i: (front[i], i)), True, None, None)
    name = min(baselines, key=lambda n: (baselines[n][1], baselines[n][0], n))
    bar = baselines[name][1]
    good = [i for i in range(len(front)) if front[i][1] <= bar]
    if good:
        return Choice(min(good, key=lambda i: (front[i], i)), True, name, bar)
    return Choice(min(range(len(front)), key=lambda i: (front[i][1], front[i][0], i)), False, name, bar)


# ------------------------------------------------------------------------------------------------------ racing


@dataclass(frozen=True)
class ParetoRacingRule:
    """Drop a candidate once at least ``rank`` references dominate it (see the module docstring).

    fitness: (document NLL, needle NLL) of each reference; per_doc: their per-document NLLs (document, needle);
    sigma: spread of per-document paired differences per objective; z: confidence (None: the exact rule, which
    counts unscored documents as NLL 0, a true lower bound).
    """

    fitness: tuple[Point, ...]
    per_doc: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    sigma: Point = (0.0, 0.0)
    z: float | None = None
    rank: int = 1

    @property
    def docs(self) -> int:
        return len(self.per_doc[0][0])

    def _lower(self, r: int, scored: tuple[list[float], list[float]]) -> Point:
        """A lower estimate of the candidate's final (document, needle) NLL, paired against reference ``r``."""
        k, n = self.docs, len(scored[0])
        if self.z is None:
            return sum(scored[0]) / k, sum(scored[1]) / k
        return tuple(self._predicted(r, scored, m) - self.z * self.sigma[m] * math.sqrt((k - n) / (n * k))
                     for m in range(2))

    def _predicted(self, r: int, scored, m: int) -> float:
        reference = self.per_doc[r][m]
        return self.fitness[r][m] + sum(c - x for c, x in zip(scored[m], reference)) / len(scored[m])

    def dominators(self, doc: list[float], needle: list[float]) -> list[int]:
        """References the candidate cannot (exact) or almost surely does not (predictive) beat in either objective."""
        out = []
        for r, (f_doc, f_needle) in enumerate(self.fitness):
            low = self._lower(r, (doc, needle))
            if low[0] >= f_doc and low[1] >= f_needle:
                out.append(r)
        return out

    def drops(self, doc: list[float], needle: list[float]) -> bool:
        return len(doc) < self.docs and len(self.dominators(doc, needle)) >= self.rank

    def bound(self, doc: list[float], needle: list[float]) -> Point:
        """The tightest lower estimate over the references that dominate it (what dropped it)."""
        rows = [self._lower(r, (doc, needle)) for r in self.dominators(doc, needle)] or [self._lower(0, (doc, needle))]
        return max(row[0] for row in rows), max(row[1] for row in rows)

    def estimate(self, doc: list[float], needle: list[float]) -> Point | None:
        """The predicted final NLLs (the mean over its dominating references of reference + mean gap); None for the
        exact rule."""
        if self.z is None:
            return None
        refs = self.dominators(doc, needle) or list(range(len(self.fitness)))
        return tuple(sum(self._predicted(r, (doc, needle), m) for r in refs) / len(refs) for m in range(2))

    def to_json(self) -> dict:
        return {"kind": "pareto", "fitness": [list(f) for f in self.fitness],
                "per_doc": [[list(a), list(b)] for a, b in self.per_doc], "sigma": list(self.sigma), "z": self.z,
                "rank": self.rank}

    @classmethod
    def from_json(cls, data: dict) -> ParetoRacingRule:
        return cls(tuple((float(a), float(b)) for a, b in data["fitness"]),
                   tuple((tuple(a), tuple(b)) for a, b in data["per_doc"]),
                   (float(data["sigma"][0]), float(data["sigma"][1])), data["z"], int(data["rank"]))


def pareto_racing_rule(rows: Sequence[tuple[Point, tuple[list[float], list[float]]]], z: float | None,
                       rank: int) -> ParetoRacingRule:
    """The rule racing against ``rows`` = [((document NLL, needle NLL), (per-document NLLs, per-document needle
    NLLs))] of complete references, best first: a candidate is dropped once ``rank`` of them dominate it. The
    spreads pool every reference's paired differences to the first one, per objective."""
    sigma = (0.0, 0.0)
    if z is not None:
        sigma = tuple(paired_spread([*[list(row[1][m]) for row in rows[1:]], list(rows[0][1][m])]) for m in range(2))
    return ParetoRacingRule(tuple(tuple(row[0]) for row in rows),
                            tuple((tuple(row[1][0]), tuple(row[1][1])) for row in rows), sigma, z, rank)
