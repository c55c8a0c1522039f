"""Bits per character: equal to a slow reference (full logits, every character counted by hand), reported by
the perplexity table, and independent of how finely a tokenizer cuts the text."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from longrope.data.corpus import TextFilesCorpus
from longrope.errors import LongRopeError
from longrope.eval.bits_per_char import bits_per_char, character_spans, span_bits_per_char
from longrope.eval.perplexity import evaluate_ppl, sliding_windows
from longrope.rope import make_spec

CODE = "".join(f"def function_{i}(value):\n    return value * {i} + {i * 7}\n\n" for i in range(60))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpc-docs")
    for i in range(3):
        (folder / f"doc{i}.py").write_text(f"# document {i}\n" + CODE)
    return TextFilesCorpus(folder)


def test_spans_start_at_a_line_and_have_the_asked_length(corpus):
    spans = character_spans(corpus, chars=50, n=3)
    assert len(spans) == 3 and all(len(s) == 50 for s in spans)
    assert all(CODE.split(s)[0].endswith("\n") for s in spans)
    with pytest.raises(LongRopeError, match="only 3 documents"):
        character_spans(corpus, chars=50, n=4)


def test_span_bits_per_char_matches_a_slow_reference(tiny_loaded, corpus):
    model, tokenizer = tiny_loaded
    expected_nats, expected_chars = 0.0, 0
    for span in character_spans(corpus, chars=40, n=3):
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer.encode(span, add_special_tokens=False)])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        expected_nats += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        expected_chars += len(span)
    got = span_bits_per_char(model, tokenizer, corpus, chars=40, n=3)
    assert got == pytest.approx(expected_nats / math.log(2) / expected_chars, rel=1e-4)


def test_a_span_longer_than_the_window_is_scored_by_sliding_windows(tiny_loaded, corpus):
    model, tokenizer = tiny_loaded
    span = character_spans(corpus, chars=400, n=1)[0]
    ids = [tokenizer.bos_token_id] + tokenizer.encode(span, add_special_tokens=False)
    assert len(ids) > 64
    expected = 0.0
    with torch.no_grad():  # slow reference: each token scored once, with the windows' own context
        for begin, end, first in sliding_windows(len(ids), 64, 32):
            logits = model(torch.tensor([ids[begin:end]])).logits[0, :-1]
            nll = F.cross_entropy(logits, torch.tensor(ids[begin + 1:end]), reduction="none")
            expected += nll[first - begin - 1:].sum().item()
    got = span_bits_per_char(model, tokenizer, corpus, chars=400, n=1)
    assert got == pytest.approx(expected / math.log(2) / len(span), rel=1e-4)


def test_ppl_table_reports_bits_per_char(tiny_loaded, corpus):
    model, tokenizer = tiny_loaded
    table = evaluate_ppl(model, tokenizer, {"none": make_spec("none")}, corpus, lengths=[64], n_docs=2,
                         progress=False)
    result = table.results["none"][64]
    # Each sample is cut to 64 tokens; the 63 scored tokens spell exactly these characters.
    assert len(result.characters) == 2 and all(0 < c < 64 * 20 for c in result.characters)
    assert result.bits_per_char == pytest.approx(result.total_nll / math.log(2) / sum(result.characters))
    assert "bpc @64" in table.to_markdown()
    assert table.to_dict()["bits_per_char"]["none"][64] == result.bits_per_char


def test_bits_per_char_needs_characters():
    with pytest.raises(LongRopeError):
        bits_per_char(1.0, 0)
