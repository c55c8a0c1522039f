"""Mutation and crossover on `Genome`s. Every result is on the grid, in range and non-decreasing.

Mutation (LongRoPE paper / microsoft/LongRoPE ``evolution/``): each searched pair, with probability ``prob``,
is resampled uniformly on the grid between its neighbours' current values (the range bounds at the ends),
left to right, so monotonicity is kept by construction. ``n_hat`` is resampled from its set with the same
probability; a searched attention factor moves by a uniform step of at most ``ATTENTION_STEP`` hundredths.

Crossover: uniform — each pair (and n_hat, attention) is taken from either parent with probability 1/2 —
then monotonicity is repaired with a running maximum (``f_i = max(f_i, f_{i-1})``). We chose this over a
single crossover point because a crossover point also needs the repair (parent A's prefix may end above
parent B's suffix) and mixes less; the running maximum keeps every value on the grid and in range because
it only ever copies an existing value.
"""

from __future__ import annotations

import random

from longrope.search.space import Genome, SearchSpace

ATTENTION_STEP = 8


def mutate(genome: Genome, space: SearchSpace, rng: random.Random, prob: float = 0.3) -> Genome:
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
    return Genome(tuple(factors), n_hat, attention)


def crossover(a: Genome, b: Genome, space: SearchSpace, rng: random.Random) -> Genome:
    factors, previous = [], space.low
    for x, y in zip(a.factors, b.factors):
        previous = max(previous, x if rng.random() < 0.5 else y)
        factors.append(previous)
    n_hat = a.n_hat if rng.random() < 0.5 else b.n_hat
    attention = a.attention if rng.random() < 0.5 else b.attention
    return Genome(tuple(factors), n_hat, attention)
