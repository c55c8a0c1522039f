"""The retrieval curriculum: exact-length windows that define values and ask for one of them, in the trained
formats only (the held-out format never appears)."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longrope.errors import LongRopeError
from longrope.data.retrieval import (
    CONSTANT_NAMES,
    DEFINITIONS,
    HELD_OUT_FORMAT,
    HELD_OUT_NAMES,
    KEY_DEFINITIONS,
    KEY_QUESTIONS,
    QUESTIONS,
    TRAIN_FORMATS,
    composed_names,
    identifier_pool,
    retrieval_window,
)
from longrope.models.tiny import train_tokenizer

TEXT = "def parse(value):\n    result = value + 1\n    return result\n\nclass Reader:\n    pass\n" * 40


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([TEXT], 300)


@pytest.fixture(scope="module")
def stream(tokenizer):
    return torch.tensor(tokenizer.encode(TEXT * 3, add_special_tokens=False))


def test_digits_are_single_tokens(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode("x = 120345", add_special_tokens=False))
    assert [t for t in tokens if any(c.isdigit() for c in t)] == list("120345")


def test_identifier_pool_is_most_common_first():
    assert identifier_pool(["alpha beta beta gamma gamma gamma x1"], size=2) == ["gamma", "beta"]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), length=st.sampled_from([128, 256]))
def test_window_is_exact_and_ends_with_the_asked_value(tokenizer, stream, seed, length):
    names = ["alpha", "bravo", "charlie", "delta", "echo_value"]
    window = retrieval_window(stream, length, tokenizer, names, random.Random(seed))
    assert window.shape == (length,) and window[0].item() == tokenizer.bos_token_id
    text = tokenizer.decode(window.tolist(), skip_special_tokens=True)
    question_line = text.rstrip("\n").rsplit("\n", 1)[-1]
    asked = [(f, n) for f in TRAIN_FORMATS for n in names + list(CONSTANT_NAMES)
             if question_line.startswith(f.ask(n) + " ")]
    assert asked, question_line
    fmt, name = asked[0]
    value = question_line[len(fmt.ask(name)) + 1:]
    assert value.isdigit() and 3 <= len(value) <= 7
    # Two formats share a question; the definition of one of them is earlier in the window.
    assert any(f.define(name, value) in text for f, _ in asked), "the asked value is defined earlier"


def test_too_short_a_window_is_refused(tokenizer, stream):
    with pytest.raises(LongRopeError, match="too short"):
        retrieval_window(stream, 12, tokenizer, ["alpha"], random.Random(0))


def test_held_out_format_never_appears(tokenizer, stream):
    rng = random.Random(0)
    held_out_head = HELD_OUT_FORMAT.definition.split("{")[0]
    assert held_out_head and all(held_out_head not in f.definition for f in TRAIN_FORMATS)
    seen_formats = set()
    for _ in range(200):
        text = tokenizer.decode(retrieval_window(stream, 128, tokenizer, ["alpha", "bravo"], rng).tolist())
        assert held_out_head not in text
        seen_formats.update(f.name for f in TRAIN_FORMATS for n in ("alpha", "bravo", *CONSTANT_NAMES)
                            if f.ask(n) in text)
    assert seen_formats == {f.name for f in TRAIN_FORMATS}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_mixed_pairing_defines_the_asked_value_in_any_definition_format(tokenizer, stream, seed):
    names = ["alpha", "bravo", "charlie"]
    window = retrieval_window(stream, 256, tokenizer, names, random.Random(seed), pairing="mixed")
    assert window.shape == (256,)
    text = tokenizer.decode(window.tolist(), skip_special_tokens=True)
    question_line = text.rstrip("\n").rsplit("\n", 1)[-1]
    asked = [(q, n) for q in QUESTIONS for n in names + list(CONSTANT_NAMES)
             if question_line.startswith(q.format(name=n) + " ")]
    assert asked, question_line
    question, name = asked[0]
    value = question_line[len(question.format(name=name)) + 1:]
    assert value.isdigit()
    assert any(d.format(name=name, value=value) in text for d in DEFINITIONS)


def test_no_definition_or_question_quotes_the_name_like_the_held_out_format():
    assert not any('"{name}"' in d for d in DEFINITIONS) and not any('["{name}"]' in q for q in QUESTIONS)


def test_quoted_key_formats_never_write_the_held_out_dict_literal():
    # mixed_keys trains subscripts and quoted keys, never `{"name": value}` nor the SETTINGS container.
    for definition in DEFINITIONS + KEY_DEFINITIONS:
        text = definition.format(name="pass_key", value=12345)
        assert '"pass_key": ' not in text and "'pass_key': " not in text and "SETTINGS" not in text
    assert all("SETTINGS" not in q for q in QUESTIONS + KEY_QUESTIONS)
    assert HELD_OUT_FORMAT.define("pass_key", "12345").startswith('SETTINGS = {"pass_key": 12345')


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_mixed_keys_pairing_asks_for_a_defined_value(tokenizer, stream, seed):
    names = ["alpha", "bravo", "charlie"]
    window = retrieval_window(stream, 256, tokenizer, names, random.Random(seed), pairing="mixed_keys")
    text = tokenizer.decode(window.tolist(), skip_special_tokens=True)
    question_line = text.rstrip("\n").rsplit("\n", 1)[-1]
    asked = [(q, n) for q in QUESTIONS + KEY_QUESTIONS for n in names + list(CONSTANT_NAMES)
             if question_line.startswith(q.format(name=n) + " ")]
    assert asked, question_line
    question, name = asked[0]
    value = question_line[len(question.format(name=name)) + 1:]
    assert value.isdigit()
    assert any(d.format(name=name, value=value) in text for d in DEFINITIONS + KEY_DEFINITIONS)


def test_mixed_keys_draws_the_quoted_formats():
    rng = random.Random(0)
    tokenizer = train_tokenizer([TEXT], 300)
    stream = torch.tensor(tokenizer.encode(TEXT, add_special_tokens=False))
    texts = [tokenizer.decode(retrieval_window(stream, 128, tokenizer, ["alpha"], rng, "mixed_keys").tolist())
             for _ in range(100)]
    assert any('config["' in t or "options['" in t or "registry." in t for t in texts)


def test_composed_names_are_distinct_two_word_names_never_held_out():
    pool = ["pass", "key", "buffer", "size", "Name", "x1", "max", "len", "a"]
    names = composed_names(pool, 1000, seed=3)
    words = {"pass", "key", "buffer", "size", "max", "len"}  # lowercase words of 3-8 letters only
    assert len(names) == len(set(names)) == 6 * 5 - len(HELD_OUT_NAMES)  # every ordered pair but pass_key
    assert all(n.count("_") == 1 and set(n.split("_")) <= words for n in names)
    assert not HELD_OUT_NAMES & set(names)
    assert composed_names(pool, 10, seed=3) == composed_names(pool, 10, seed=3) != composed_names(pool, 10, seed=4)


def test_composed_names_need_words():
    with pytest.raises(LongRopeError, match="two lowercase words"):
        composed_names(["X1", "ab"], 5)


def test_unknown_pairing_is_refused(tokenizer, stream):
    with pytest.raises(LongRopeError, match="unknown retrieval pairing"):
        retrieval_window(stream, 256, tokenizer, ["alpha"], random.Random(0), pairing="random")
