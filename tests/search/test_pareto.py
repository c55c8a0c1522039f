"""Pareto fronts of hand-made points, NSGA-II order, the selection rule and racing on two objectives."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longrope.search.pareto import (
    ParetoRacingRule,
    choose,
    crowding_distance,
    dominates,
    first_front,
    non_dominated_sort,
    pareto_order,
    pareto_racing_rule,
)

# (document NLL, needle NLL), lower is better in both
POINTS = [
    (1.0, 5.0),  # 0  front 1 (best document NLL)
    (2.0, 3.0),  # 1  front 1
    (4.0, 1.0),  # 2  front 1 (best needle NLL)
    (2.0, 4.0),  # 3  front 2: dominated by 1 only
    (3.0, 3.0),  # 4  front 2: dominated by 1
    (5.0, 1.0),  # 5  front 2: dominated by 2
    (3.0, 3.5),  # 6  front 3: dominated by 1 and 4
    (5.0, 5.0),  # 7  front 4: dominated by 0, 1, 2, 3, 4, 5 and 6
    (2.0, 3.0),  # 8  front 1: equal to 1 (neither dominates the other)
]


def test_dominates():
    assert dominates((1, 1), (1, 2)) and dominates((1, 1), (2, 2))
    assert not dominates((1, 1), (1, 1))  # equal: neither
    assert not dominates((1, 3), (2, 2)) and not dominates((2, 2), (1, 3))


def test_front_of_hand_made_points():
    assert non_dominated_sort(POINTS) == [[0, 1, 2, 8], [3, 4, 5], [6], [7]]
    assert first_front(POINTS) == [0, 1, 8, 2]  # by document NLL
    assert first_front([]) == [] and non_dominated_sort([(1.0, 1.0)]) == [[0]]


def test_crowding_distance_by_hand():
    points = [(0.0, 4.0), (1.0, 2.0), (2.0, 1.0), (4.0, 0.0)]
    distance = crowding_distance(points, [0, 1, 2, 3])
    assert distance[0] == distance[3] == math.inf
    # pair 1: document neighbours 0 and 2 span 2 of 4; needle neighbours 2 and 0 span 3 of 4
    assert distance[1] == pytest.approx(2 / 4 + 3 / 4)
    assert distance[2] == pytest.approx(3 / 4 + 2 / 4)
    assert crowding_distance(points, [1, 2]) == {1: math.inf, 2: math.inf}


def test_nsga2_order_fills_by_front_then_crowding():
    order = pareto_order(POINTS, [f"k{i}" for i in range(len(POINTS))])
    assert set(order[:4]) == {0, 1, 2, 8} and set(order[4:7]) == {3, 4, 5} and order[7:] == [6, 7]
    assert order[:2] == [0, 2]  # the ends of the first front come first (infinite crowding distance)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=30))
def test_fronts_are_a_partition_and_nothing_in_a_front_is_dominated_by_a_later_one(raw):
    points = [(float(a), float(b)) for a, b in raw]
    fronts = non_dominated_sort(points)
    assert sorted(i for f in fronts for i in f) == list(range(len(points)))
    for k, front in enumerate(fronts):
        for i in front:
            for later in fronts[k:]:
                assert not any(dominates(points[j], points[i]) for j in later)
            if k:  # every member of a later front is dominated by a member of the one before
                assert any(dominates(points[j], points[i]) for j in fronts[k - 1])
    brute = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    assert sorted(first_front(points)) == brute


# -- the selection rule -----------------------------------------------------------------------------------------


FRONT = [(1.0, 5.0), (2.0, 3.0), (3.0, 2.0), (4.0, 1.0)]


def test_choose_lowest_perplexity_at_or_below_the_best_baselines_needle():
    baselines = {"yarn": (1.5, 4.0), "dynamic_ntk": (2.5, 2.5), "pi": (3.0, 6.0)}  # best needle: dynamic_ntk 2.5
    choice = choose(FRONT, baselines)
    assert choice.index == 2 and choice.met_baseline  # (3, 2): the lowest document NLL with needle <= 2.5
    assert choice.best_baseline == "dynamic_ntk" and choice.best_baseline_needle == 2.5
    assert "at most the best baseline's (dynamic_ntk" in choice.reason
    assert choose(FRONT, {"ntk": (9.0, 3.0)}).index == 1  # equal counts: (2, 3)


def test_choose_best_retrieval_when_no_member_reaches_the_baselines():
    choice = choose(FRONT, {"dynamic_ntk": (5.0, 0.5)})
    assert choice.index == 3 and not choice.met_baseline and "lowest needle NLL" in choice.reason


def test_choose_without_baselines_takes_the_lowest_perplexity():
    assert choose(FRONT, {}).index == 0
    with pytest.raises(ValueError):
        choose([], {})


# -- racing on two objectives -----------------------------------------------------------------------------------


def _rows():
    """Three complete references over 4 documents, best first."""
    return [
        ((2.0, 3.0), ([2.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0])),
        ((1.0, 4.0), ([1.0, 1.0, 1.0, 1.0], [4.0, 4.0, 4.0, 4.0])),
        ((3.0, 1.0), ([3.0, 3.0, 3.0, 3.0], [1.0, 1.0, 1.0, 1.0])),
    ]


def test_exact_rule_drops_only_what_is_provably_dominated_by_rank_references():
    rule = pareto_racing_rule(_rows(), None, rank=1)
    # after 2 of 4 docs at (8, 8) per doc: lower bounds (4, 4) >= (2, 3), (1, 4) and (3, 1): dominated by all three
    assert rule.dominators([8.0, 8.0], [8.0, 8.0]) == [0, 1, 2] and rule.drops([8.0, 8.0], [8.0, 8.0])
    assert rule.bound([8.0, 8.0], [8.0, 8.0]) == (4.0, 4.0)
    assert rule.estimate([8.0, 8.0], [8.0, 8.0]) is None
    # bounds (4, 0.5): beats every reference's needle NLL: never dropped
    assert not rule.drops([8.0, 8.0], [1.0, 0.0])
    # bounds (1.5, 2): dominated by none: (2, 3) no, (1, 4) no, (3, 1) no
    assert rule.dominators([3.0, 3.0], [2.0, 2.0]) == []
    assert not rule.drops([8.0, 8.0, 8.0, 8.0], [8.0] * 4)  # complete: never "dropped"
    strict = pareto_racing_rule(_rows(), None, rank=3)
    assert not strict.drops([6.0, 2.0], [6.0, 2.0])  # bounds (2, 2): dominated by (1, 4)? no; by (3, 1)? no
    assert strict.drops([8.0, 8.0], [8.0, 8.0])


def test_predictive_rule_uses_paired_gaps_and_roundtrips_through_json():
    rule = pareto_racing_rule(_rows(), 1.5, rank=2)
    assert rule.sigma[0] > 0 and rule.sigma[1] > 0
    far = ([5.0, 5.0], [6.0, 6.0])  # 3 above the first reference in both, on every scored document
    assert rule.drops(*far)
    estimate = rule.estimate(*far)
    assert estimate[0] > 2.0 and estimate[1] > 3.0
    assert ParetoRacingRule.from_json(rule.to_json()) == rule


def test_exact_rule_with_rank_parents_never_drops_a_member_of_the_selection():
    """With rank = parents, a dropped candidate has `parents` references in earlier fronts: NSGA-II would not
    select it (checked on random data against the final points)."""
    rng = random.Random(0)
    drops = 0
    for _ in range(200):
        k, parents = 4, 3
        refs = []
        for _ in range(parents):
            doc = [rng.uniform(0, 4) for _ in range(k)]
            needle = [rng.uniform(0, 4) for _ in range(k)]
            refs.append(((sum(doc) / k, sum(needle) / k), (doc, needle)))
        rule = pareto_racing_rule(refs, None, rank=parents)
        doc = [rng.uniform(0, 6) for _ in range(k)]
        needle = [rng.uniform(0, 6) for _ in range(k)]
        for n in range(1, k):
            if rule.drops(doc[:n], needle[:n]):
                final = (sum(doc) / k, sum(needle) / k)
                points = [r[0] for r in refs] + [final]
                assert len(points) - 1 not in pareto_order(points)[:parents]
                drops += 1
                break
    assert drops > 20
