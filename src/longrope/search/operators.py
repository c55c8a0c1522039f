"""Mutation and crossover on `Genome`s. Every result is on the grid, in range and non-decreasing.

Mutation (LongRoPE paper / microsoft/LongRoPE ``evolution/``): each searched pair, with probability ``prob``,
is resampled uniformly on the grid between its neighbours' current values (the range bounds at the ends),
left to right, so monotonicity is kept by construction. ``n_hat`` is resampled from its set with the same
probability; a searched attention factor moves by a uniform step of at most ``ATTENTION_STEP`` hundredths.

LongRoPE2 with the critical pair searched: first (so that the factor mutation sees the new length), with
probability ``prob`` the critical pair is resampled from the space's candidates; pairs that become searched start
at the factor the NTK rule gave them (``lambda_c ** (i / c)``, raised to the range's low end), pairs that stop
being searched are dropped (the NTK rule takes them over), so the child's table stays near its parent's.

Crossover: uniform — each pair (and n_hat, attention) is taken from either parent with probability 1/2 —
then monotonicity is repaired with a running maximum (``f_i = max(f_i, f_{i-1})``). We chose this over a
single crossover point because a crossover point also needs the repair (parent A's prefix may end above
parent B's suffix) and mixes less; the running maximum keeps every value on the grid and in range because
it only ever copies an existing value. With the critical pair searched, the child takes either parent's critical
pair; a pair that only one parent searches comes from that parent.
"""

from __future__ import annotations

import random

from longrope.search.space import GRID, Genome, SearchSpace

ATTENTION_STEP = 8


def move_critical(genome: Genome, space: SearchSpace, critical: int) -> tuple[int, ...]:
    """``genome``'s factors for a genome whose critical pair is ``critical`` (see the module docstring)."""
    old = space.critical_of(genome)
    factors = list(genome.factors)
    if critical > old:
        return tuple(factors[critical - old:])
    lam_c = factors[0] / GRID
    lower = [min(max(round(GRID * lam_c ** (i / old)), space.low), factors[0]) for i in range(critical, old)]
    out, previous = [], space.low
    for v in lower + factors:
        previous = max(previous, v)
        out.append(previous)
    return tuple(out)


def mutate(genome: Genome, space: SearchSpace, rng: random.Random, prob: float = 0.3) -> Genome:
    critical = genome.critical
    if space.critical_searched and rng.random() < prob:
        critical = rng.choice(space.critical_choices)
        genome = Genome(move_critical(genome, space, critical), genome.n_hat, genome.attention, critical)
    factors = list(genome.factors)
    n = len(factors)
    for i in range(n):
        if rng.random() < prob:
            left = factors[i - 1] if i > 0 else space.low
            right = factors[i + 1] if i < n - 1 else space.high
            factors[i] = rng.randint(left, right)
    n_hat = genome.n_hat
    if space.n_hat_searched and rng.random() < prob:
        n_hat = rng.choice(space.n_hat_choices)
    attention = genome.attention
    if space.attention_range is not None and rng.random() < prob:
        lo, hi = space.attention_range
        attention = min(max(attention + rng.randint(-ATTENTION_STEP, ATTENTION_STEP), lo), hi)
    return Genome(tuple(factors), n_hat, attention, critical)


def crossover(a: Genome, b: Genome, space: SearchSpace, rng: random.Random) -> Genome:
    critical = None
    if space.critical_searched:
        critical = a.critical if rng.random() < 0.5 else b.critical
        # align both parents on pairs critical..d/2-1; a pair only one parent searches is None in the other
        a_row = [None] * max(0, a.critical - critical) + list(a.factors[max(0, critical - a.critical):])
        b_row = [None] * max(0, b.critical - critical) + list(b.factors[max(0, critical - b.critical):])
    else:
        a_row, b_row = list(a.factors), list(b.factors)
    factors, previous = [], space.low
    for x, y in zip(a_row, b_row):
        if x is None or y is None:
            chosen = y if x is None else x
        else:
            chosen = x if rng.random() < 0.5 else y
        previous = max(previous, chosen)
        factors.append(previous)
    n_hat = a.n_hat if rng.random() < 0.5 else b.n_hat
    attention = a.attention if rng.random() < 0.5 else b.attention
    return Genome(tuple(factors), n_hat, attention, critical)
