"""Fitness: batching equals one-by-one, racing never drops a candidate that could enter, needle planting."""

from __future__ import annotations

import math
import random

import pytest
import torch
from search_helpers import LENGTH, small_data, small_model

from longrope.errors import LongRopeError
from longrope.eval.loss import token_nll
from longrope.patch import apply, restore
from longrope.rope import LinearSpec, LongRopeSpec, NTKSpec, YarnSpec
from longrope.search.fitness import Evaluator, FitnessData, build_fitness_data, plant_needle

SPECS = [
    LinearSpec(factor=4),
    NTKSpec(factor=4),
    YarnSpec(factor=4),
    LongRopeSpec(long_factor=tuple(1 + i * 0.4 for i in range(8)), factor=4),
]


def test_batched_equals_single_and_token_nll():
    model, data = small_model(), small_data()
    single = Evaluator(model, data, batch=1).evaluate(SPECS)
    batched_eval = Evaluator(model, data, batch=3)
    batched = batched_eval.evaluate(SPECS)
    for a, b in zip(single, batched):
        assert a.complete and b.complete
        assert a.fitness == pytest.approx(b.fitness, abs=1e-5)
    assert batched_eval.forward_tokens == len(SPECS) * data.docs * LENGTH
    apply(model, SPECS[2])
    with torch.no_grad():
        direct = token_nll(model, data.input_ids).mean().item()
    restore(model)
    assert single[2].fitness == pytest.approx(direct, abs=1e-5)


def test_exact_racing_is_safe():
    model, data = small_model(), small_data(docs=4)
    full = Evaluator(model, data, batch=2).evaluate(SPECS)
    fitness = sorted(r.fitness for r in full)
    threshold = fitness[1]  # only the best can beat it
    raced_eval = Evaluator(model, data, batch=2)
    raced = raced_eval.evaluate(SPECS, threshold=threshold)  # lower bounds 0: exact
    for f, r in zip(full, raced):
        if f.fitness < threshold:
            assert r.complete and r.fitness == f.fitness
        if not r.complete:
            assert f.fitness >= r.fitness > threshold  # the bound that dropped it is a true lower bound
    assert raced_eval.forward_tokens <= len(SPECS) * data.docs * LENGTH


def test_tight_bounds_drop_early():
    model, data = small_model(), small_data(docs=4)
    full = Evaluator(model, data).evaluate(SPECS)
    best = [min(r.per_doc[j] for r in full) for j in range(4)]
    threshold = min(r.fitness for r in full) + 1e-6
    ev = Evaluator(model, data)
    raced = ev.evaluate(SPECS, threshold=threshold, lower_bounds=best)
    assert sum(r.complete for r in raced) >= 1
    assert ev.forward_tokens < len(SPECS) * 4 * LENGTH


def test_fitness_data_checks():
    with pytest.raises(LongRopeError):
        FitnessData(torch.zeros(3, dtype=torch.long))
    with pytest.raises(LongRopeError, match="at least one scored"):
        FitnessData(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 7, dtype=torch.bool))
    with pytest.raises(LongRopeError, match="test split"):
        build_fitness_data(None, 64, 2, split="test")
    with pytest.raises(LongRopeError, match="batch"):
        Evaluator(small_model(), small_data(), batch=0)


class CharTokenizer:
    """One token per character (ids = code points): enough to check needle planting."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_plant_needle():
    tok = CharTokenizer()
    text = "".join(f"line {i} of code\n" for i in range(100))
    ids = [1] + [ord(c) for c in text][:799]
    planted, scored = plant_needle(ids, tok, random.Random(3))
    assert len(planted) == len(ids)
    decoded = tok.decode(planted[1:])
    key = decoded[-5:]
    assert key.isdigit() and decoded.endswith(f"\nassert PASS_KEY == {key}")
    assert f"\nPASS_KEY = {key}\n" in decoded
    assert [planted[p + 1] for p in scored] == [ord(c) for c in key]
    mask = torch.zeros(1, len(planted) - 1, dtype=torch.bool)
    mask[0, scored] = True
    data = FitnessData(torch.tensor([planted]), mask)
    assert data.score_mask.sum() == 5 and not math.isnan(float(data.input_ids.sum()))


def test_racing_bounds():
    from longrope.search.fitness import racing_bounds

    parents = [[1.0, 2.0, 3.0], [1.1, 2.1, 3.1], [1.2, 2.3, 3.1]]
    assert racing_bounds(parents, None) == [0.0, 0.0, 0.0]
    bounds = racing_bounds(parents, 2.0)
    assert all(b < r for b, r in zip(bounds, parents[-1]))
    shifted = [[v + 0.5 for v in row] for row in parents[:-1]] + [parents[-1]]
    assert racing_bounds(shifted, 2.0) == pytest.approx(bounds)  # a constant offset is not spread
    assert racing_bounds([[0.01, 0.02]], 500.0) == [0.0, 0.0]  # never below zero
