"""Passkey: the scorer, exact-length prompts, and the trial loop with a deterministic retriever and a real model."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longrope.errors import LongRopeError
from longrope.eval.generation import greedy_generate
from longrope.eval.passkey import (
    CODE,
    NATURAL,
    PasskeyTemplate,
    answer_loglik,
    build_passkey_prompt,
    check_answer_budget,
    evaluate_passkey,
    first_integer,
    passkey_trials,
    score_passkey,
    write_retrieval_report,
)
from longrope.rope import make_spec


@pytest.mark.parametrize("output,key,expected", [
    (" 12345.", 12345, True),
    ("12345", "12345", True),
    (" 12345 is the pass key. 99999", 12345, True),
    ("\n12345\n", 12345, True),
    (" is 12345", 12345, True),        # first integer, wherever it starts
    (" 1234", 12345, False),           # truncated
    (" 123456", 12345, False),         # longer number
    (" 54321 12345", 12345, False),    # only the first integer counts
    (" 12,345", 12345, False),         # 12 is the first integer
    (" 12 345", 12345, False),
    ("", 12345, False),
    (" the pass key", 12345, False),
    ("PASS_KEY == 012345", 12345, True),  # leading zero: same integer
    ("x1 = 12345", 12345, False),         # the 1 of x1 comes first
])
def test_score_passkey(output, key, expected):
    assert score_passkey(output, key) is expected


def test_first_integer():
    assert first_integer("abc 42 7") == 42 and first_integer("none") is None


@pytest.mark.parametrize("template", [NATURAL, CODE])
@settings(max_examples=25, deadline=None)
@given(length=st.integers(260, 700), depth=st.floats(0, 1), key=st.integers(10000, 99999))
def test_prompt_has_exact_length_and_key_at_depth(tiny_loaded, template, length, depth, key):
    _, tokenizer = tiny_loaded
    prompt = build_passkey_prompt(tokenizer, length, key, depth, template)
    assert prompt.ids.shape == (length,)
    assert prompt.ids[0] == tokenizer.bos_token_id
    text = tokenizer.decode(prompt.ids, skip_special_tokens=True)
    assert text.count(str(key)) == 2 and text.endswith(template.question)
    assert text.startswith(template.instruction)
    # the key line sits at the requested fraction of the filler (within one filler unit)
    unit = len(tokenizer(template.filler, add_special_tokens=False)["input_ids"])
    needle = len(tokenizer(template.key_line.format(key=key), add_special_tokens=False)["input_ids"])
    head = 1 + len(tokenizer(template.instruction, add_special_tokens=False)["input_ids"])
    tail = len(tokenizer(template.question, add_special_tokens=False)["input_ids"])
    filler = length - head - needle - tail
    assert abs((prompt.needle_start - head) - depth * filler) <= unit


def test_too_short_and_bad_template(tiny_loaded):
    _, tokenizer = tiny_loaded
    with pytest.raises(LongRopeError, match="too short"):
        build_passkey_prompt(tokenizer, 10, 12345, 0.5, "natural")
    with pytest.raises(LongRopeError, match="unknown passkey template"):
        build_passkey_prompt(tokenizer, 200, 12345, 0.5, "poetry")
    with pytest.raises(LongRopeError, match="must contain"):
        PasskeyTemplate("x", "i", "f", "no key here", "q")
    with pytest.raises(LongRopeError, match="depth"):
        build_passkey_prompt(tokenizer, 200, 12345, 1.5, "natural")


def test_a_generation_budget_that_cannot_spell_the_key_is_refused(tiny_loaded):
    model, tokenizer = tiny_loaded
    needed = len(tokenizer.encode("12345", add_special_tokens=False))  # the tiny tokenizer splits digits: 5
    check_answer_budget(tokenizer, needed)
    for budget in (needed - 1, 0, True):
        with pytest.raises(LongRopeError, match="cannot produce the answer"):
            check_answer_budget(tokenizer, budget)
    with pytest.raises(LongRopeError, match="cannot produce the answer"):
        passkey_trials(model, tokenizer, [64], trials=1, max_new_tokens=needed - 1, progress=False)


def test_oracle_within_window_is_perfect_and_blind_beyond(tiny_loaded, oracle_factory):
    """A deterministic retriever that sees only the last 150 tokens: the whole pipeline (prompt, KV-cache
    decoding, decoding to text, scoring) gives 100% when the prompt fits in its window and ~depth-limited
    accuracy beyond it."""
    _, tokenizer = tiny_loaded
    oracle = oracle_factory(tokenizer, window=150)
    trials = passkey_trials(oracle, tokenizer, [140, 1200], trials=12, seed=3, template="code", progress=False)
    inside = [t for t in trials if t.length == 140]
    beyond = [t for t in trials if t.length == 1200]
    assert all(t.correct for t in inside)
    assert oracle.prompt_lengths[:12] == [140] * 12
    # beyond the window only keys in the last ~10% of the prompt are seen
    assert all(t.correct == (t.depth > 0.93) for t in beyond if not 0.85 < t.depth < 0.95)
    assert sum(t.correct for t in beyond) <= 3
    assert len({t.key for t in inside}) == 12  # a fresh key per trial


def test_trials_are_seeded(tiny_loaded, oracle_factory):
    _, tokenizer = tiny_loaded
    oracle = oracle_factory(tokenizer, window=10_000)
    a = passkey_trials(oracle, tokenizer, [200], trials=3, seed=1, progress=False)
    b = passkey_trials(oracle, tokenizer, [200], trials=3, seed=1, progress=False)
    c = passkey_trials(oracle, tokenizer, [200], trials=3, seed=2, progress=False)
    assert [(t.key, t.depth) for t in a] == [(t.key, t.depth) for t in b] != [(t.key, t.depth) for t in c]


def test_greedy_generate_matches_transformers_generate(tiny_loaded):
    model, _ = tiny_loaded
    ids = torch.randint(3, 500, (1, 90), generator=torch.Generator().manual_seed(0))
    ours = greedy_generate(model, ids[0], max_new_tokens=8)
    reference = model.generate(ids, max_new_tokens=8, do_sample=False, min_new_tokens=8)[0, 90:].tolist()
    assert ours == reference


def test_no_scaling_far_beyond_the_window_fails(tiny_loaded, tmp_path):
    """The test-size tiny model (window 64), unscaled at 8x its window: retrieval is near zero."""
    model, tokenizer = tiny_loaded
    table = evaluate_passkey(model, tokenizer, {"none": make_spec("none")}, [512], trials=5, template="code",
                             progress=False)
    assert table.accuracy()["none"][512] <= 0.2
    paths = write_retrieval_report(table, tmp_path, {"model": "test"}, seed=0)
    data = json.loads(paths["json"].read_text())
    assert len(data["trials"]["none"]) == 5 and {"key", "depth", "output", "correct"} <= set(data["trials"]["none"][0])
    assert "| none |" in paths["markdown"].read_text()


def test_answer_loglik_is_the_teacher_forced_mean_log_probability_of_the_answer_tokens(tiny_loaded):
    model, tokenizer = tiny_loaded
    prompt = build_passkey_prompt(tokenizer, 120, 48213, 0.4, "code")
    answer = tokenizer(" 48213", add_special_tokens=False)["input_ids"]
    with torch.no_grad():  # reference: every position's logits, the answer's tokens picked by hand
        full = torch.log_softmax(model(torch.tensor([prompt.ids.tolist() + answer])).logits[0].float(), dim=-1)
    start = len(prompt.ids)
    reference = sum(float(full[start - 1 + i, token]) for i, token in enumerate(answer)) / len(answer)
    assert answer_loglik(model, prompt.ids, answer, 130) == pytest.approx(reference, abs=1e-5)

    table = evaluate_passkey(model, tokenizer, {"none": None}, [120], trials=3, template="code", progress=False)
    trials = table.trials["none"]
    assert all(t.answer_loglik is not None and t.answer_loglik <= 0 for t in trials)
    mean = table.to_dict()["answer_loglik"]["none"][120]
    assert mean == pytest.approx(sum(t.answer_loglik for t in trials) / 3)
    assert "Mean log-likelihood of the answer's tokens" in table.to_markdown()


def test_depths_are_stratified_so_both_ends_of_the_prompt_are_always_tested(tiny_loaded, oracle_factory):
    _, tokenizer = tiny_loaded
    oracle = oracle_factory(tokenizer, window=10_000)
    trials = passkey_trials(oracle, tokenizer, [200], trials=20, seed=5, progress=False)
    assert [int(t.depth * 20) for t in trials] == list(range(20))  # one trial in each twentieth
    assert min(t.depth for t in trials) < 0.05 and max(t.depth for t in trials) >= 0.95
