"""Fitness: batching equals one-by-one, racing never drops a candidate that could enter, needle planting."""

from __future__ import annotations

import math
import random

import pytest
import torch
from search_helpers import LENGTH, small_data, small_model

from longrope.attention.patch import apply, restore
from longrope.errors import LongRopeError
from longrope.loss import token_nll
from longrope.rope import LinearSpec, LongRopeSpec, NTKSpec, YarnSpec
from longrope.search.fitness import (
    Evaluator,
    FitnessData,
    RacingRule,
    build_fitness_data,
    paired_spread,
    plant_needle,
    racing_rule,
)

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
    ranked = sorted((r.fitness, r.per_doc) for r in full)
    threshold = ranked[1][0]  # only the best can beat it
    raced_eval = Evaluator(model, data, batch=2)
    raced = raced_eval.evaluate(SPECS, racing_rule(ranked[:2], z=None))
    for f, r in zip(full, raced):
        if f.fitness < threshold:
            assert r.complete and r.fitness == f.fitness
        if not r.complete:
            assert f.fitness >= r.fitness > threshold  # the bound that dropped it is a true lower bound
    assert raced_eval.forward_tokens <= len(SPECS) * data.docs * LENGTH


def test_predictive_rule_drops_clear_losers_after_one_document():
    model, data = small_model(), small_data(docs=4)
    full = Evaluator(model, data).evaluate(SPECS)
    best = min(full, key=lambda r: r.fitness)
    rule = RacingRule(best.fitness, tuple(best.per_doc), sigma=1e-4, z=2.0)
    ev = Evaluator(model, data)
    raced = ev.evaluate(SPECS, rule)
    for f, r in zip(full, raced):
        if f is best:
            assert r.complete and r.fitness == f.fitness  # equal to the reference: never dropped
        elif min(a - b for a, b in zip(f.per_doc, best.per_doc)) > 0.01:  # worse on every document
            assert not r.complete and len(r.per_doc) == 1
    assert ev.forward_tokens < len(SPECS) * 4 * LENGTH
    with pytest.raises(LongRopeError, match="documents"):
        ev.evaluate(SPECS, RacingRule(1.0, (1.0, 1.0), 0.1, 2.0))


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


def test_paired_spread_ignores_offsets_and_document_difficulty():
    parents = [[1.0, 2.0, 3.0], [1.1, 2.1, 3.1], [1.2, 2.3, 3.1]]
    sigma = paired_spread(parents)
    assert sigma > 0.01
    shifted = [[v + 0.5 for v in row] for row in parents[:-1]] + [parents[-1]]
    assert paired_spread(shifted) == pytest.approx(sigma)  # a constant gap is not spread
    assert paired_spread([[1.0, 5.0, 9.0], [1.0, 5.0, 9.0]]) == 1e-4  # floor
    assert racing_rule([(2.0, [1.0, 3.0])], z=None) == RacingRule(2.0, (1.0, 3.0), 0.0, None)


def test_racing_against_the_best_learns_the_spread_from_every_parent():
    """Rank 1 races against the best, but the spread of paired differences comes from all the parents given
    (with the best alone there is nothing to learn it from, and the rule would drop on any gap)."""
    parents = [(2.0, [1.0, 2.0, 3.0]), (2.1, [1.1, 2.1, 3.1]), (2.2, [1.2, 2.3, 3.1])]
    best = racing_rule(parents, z=1.5, rank=1)
    assert best.threshold == 2.0 and best.reference == (1.0, 2.0, 3.0)
    by_hand = paired_spread([[1.1, 2.1, 3.1], [1.2, 2.3, 3.1], [1.0, 2.0, 3.0]])
    assert best.sigma == pytest.approx(by_hand) and best.sigma > 0.01
    assert racing_rule(parents, z=1.5) == racing_rule(parents, z=1.5, rank=3)  # default: the last
    assert racing_rule(parents, z=1.5, rank=3).reference == (1.2, 2.3, 3.1)


def test_predictive_bound_formula():
    """Slow, written-out version of the rule: mean gap so far minus z prediction deviations."""
    rule = RacingRule(threshold=3.0, reference=(2.0, 3.0, 4.0, 3.0), sigma=0.1, z=2.0)
    scored = [2.05, 3.02]
    gap = ((2.05 - 2.0) + (3.02 - 3.0)) / 2
    deviation = 0.1 * math.sqrt((4 - 2) / (2 * 4))
    assert rule.bound(scored) == pytest.approx(3.0 + gap - 2.0 * deviation)
    assert rule.drops([2.2]) and not rule.drops([2.0]) and not rule.drops([2.2, 3.2, 4.2, 3.2])  # complete
    exact = RacingRule(3.0, (2.0, 3.0, 4.0, 3.0))
    assert exact.bound([8.0]) == 2.0 and not exact.drops([8.0]) and exact.drops([8.0, 4.0])
    assert RacingRule.from_json(rule.to_json()) == rule


def test_predictive_rule_wrong_drop_rate_is_bounded():
    """Gaussian paired differences: a candidate that would have entered (final gap < 0) is dropped at most
    (k - 1) * Phi(-z) of the time (the union over looks); one well below the threshold almost never."""
    rng = random.Random(0)
    k, sigma, z = 5, 0.01, 2.0
    rule = RacingRule(0.0, (0.0,) * k, sigma, z)
    limit = (k - 1) * 0.5 * math.erfc(z / math.sqrt(2))

    def drop_rates(mean_gap: float, trials: int = 4000) -> tuple[float, float]:
        """(share dropped, share dropped although its final gap was < 0)."""
        drops = wrong = 0
        for _ in range(trials):
            gaps = [rng.gauss(mean_gap, sigma) for _ in range(k)]
            dropped = any(rule.drops(gaps[:n]) for n in range(1, k))
            drops += dropped
            wrong += dropped and sum(gaps) < 0
        return drops / trials, wrong / trials

    for mean_gap in (0.0, -0.5 * sigma, 0.5 * sigma):
        assert drop_rates(mean_gap)[1] <= limit
    assert drop_rates(-2 * sigma)[0] < 0.005
    assert drop_rates(2 * sigma)[0] > 0.6  # and it does drop clear losers


def test_two_objective_fitness_data_scores_exactly_the_answers(held_out_dir, tmp_path, monkeypatch):
    """`build_fitness_data(needles_per_doc=...)`: the needle mask predicts exactly the answer tokens (the mask is on
    prediction positions: position t scores token t+1), the document mask exactly the natural text."""
    from transformers import AutoTokenizer

    from longrope.data.corpus import get_corpus
    from longrope.data.needles import needle_documents
    from longrope.data.samples import token_samples
    from longrope.models.shipped import shipped_tiny_path

    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(shipped_tiny_path())
    data = build_fitness_data(tokenizer, 1024, 2, str(held_out_dir), "validation", seed=1, needles_per_doc=3)
    assert data.two_objectives and "3 needles each" in data.description
    samples = token_samples(get_corpus(str(held_out_dir), "validation"), tokenizer, min_tokens=1024, n=2, seed=1)
    planted = needle_documents([s.tolist() for s in samples], tokenizer, 3, seed=1)
    for j, doc in enumerate(planted):
        targets = data.input_ids[j, 1:]
        assert targets[data.needle_mask[j]].tolist() == [doc.ids[p] for p in sorted(doc.answer_positions)]
        answers = tokenizer.decode(targets[data.needle_mask[j]].tolist()).split()
        assert sorted(answers) == sorted(n.value for n in doc.needles)
        assert targets[data.score_mask[j]].tolist() == [doc.ids[p] for p in doc.text_positions]
        assert not bool((data.score_mask[j] & data.needle_mask[j]).any())
    plain = build_fitness_data(tokenizer, 1024, 2, str(held_out_dir), "validation", seed=1)
    assert plain.fingerprint != data.fingerprint and not plain.two_objectives
