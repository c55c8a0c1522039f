"""Needle-driven perplexity data: the scored tokens are exactly the answers (needle objective) and exactly the
natural text (document objective); depths cover both ends of the prompt; several formats; lengths kept."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longrope.data.corpus import stdlib_root
from longrope.data.needles import (
    END_SHARE,
    NEEDLE_FORMATS,
    NEEDLE_NAMES,
    needle_depths,
    needle_documents,
    plant_needles,
)
from longrope.data.retrieval import HELD_OUT_FORMAT
from longrope.errors import LongRopeError

LENGTH = 1024


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from longrope.models.shipped import shipped_tiny_path

    return AutoTokenizer.from_pretrained(shipped_tiny_path())


@pytest.fixture(scope="module")
def samples(tokenizer):
    """Four long natural documents (stdlib source), BOS + tokens cut to LENGTH."""
    out = []
    for name in ("difflib.py", "pickle.py", "ftplib.py", "tarfile.py"):
        ids = tokenizer((stdlib_root() / name).read_text(), add_special_tokens=False)["input_ids"]
        out.append([tokenizer.bos_token_id] + list(ids[: LENGTH - 1]))
    return out


@pytest.fixture(scope="module")
def documents(samples, tokenizer):
    return needle_documents(samples, tokenizer, per_doc=4, seed=3)


def test_scored_needle_tokens_are_exactly_the_answers(documents, tokenizer):
    for doc in documents:
        answers = [p for needle in doc.needles for p in needle.answer_positions]
        assert sorted(doc.answer_positions) == sorted(answers) and len(set(answers)) == len(answers)
        for needle in doc.needles:
            tokens = [doc.ids[p] for p in needle.answer_positions]
            assert tokens == tokenizer(" " + needle.value, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(tokens).strip() == needle.value
            # right before the answer: the question about this needle's name
            before = tokenizer.decode(list(doc.ids[needle.answer_positions[0] - 40 : needle.answer_positions[0]]))
            assert needle.name in before.splitlines()[-1]
            # the definition holds name and value
            definition = tokenizer.decode(list(doc.ids[needle.position : needle.position + 40]))
            assert needle.name in definition and needle.value in definition
        assert doc.answer_positions[-1] == LENGTH - 1  # the last answer ends the document


def test_document_tokens_are_exactly_the_natural_text(documents, samples):
    for doc, original in zip(documents, samples):
        assert len(doc.ids) == LENGTH and doc.ids[0] == original[0]
        text = [doc.ids[p] for p in doc.text_positions]
        assert text == original[1 : 1 + len(text)]  # the document's own text, in order, cut shorter
        assert 0 not in doc.text_positions
        assert not set(doc.text_positions) & set(doc.answer_positions)
        planted = LENGTH - 1 - len(text)  # needles, questions and answers: everything else
        assert 0 < planted < 0.25 * LENGTH


def test_depths_cover_the_whole_prompt_including_both_ends(documents):
    depths = sorted(n.depth for doc in documents for n in doc.needles)
    assert len(depths) == 16
    assert depths[0] <= END_SHARE and depths[-1] >= 1 - END_SHARE
    # one needle per stratum: the middle strata are (1 - 2 * 0.05) / 14 wide
    width = (1 - 2 * END_SHARE) / 14
    for k, depth in enumerate(depths[1:-1]):
        assert END_SHARE + k * width - 0.01 <= depth <= END_SHARE + (k + 1) * width + 0.01
    first = min((n for d in documents for n in d.needles), key=lambda n: n.depth)
    assert first.position < 0.05 * LENGTH + 2  # right after BOS, at the start of the prompt


def test_several_formats_distinct_names_and_no_held_out_format(documents):
    formats = {n.format for doc in documents for n in doc.needles}
    assert len(formats) >= 3 and formats <= {f.name for f in NEEDLE_FORMATS}
    assert HELD_OUT_FORMAT.name not in {f.name for f in NEEDLE_FORMATS}
    assert "PASS_KEY" not in NEEDLE_NAMES and "pass_key" not in NEEDLE_NAMES
    for doc in documents:
        assert len({n.name for n in doc.needles}) == len(doc.needles)
        assert len({n.value for n in doc.needles}) == len(doc.needles)


def test_same_seed_same_documents(samples, tokenizer, documents):
    assert needle_documents(samples, tokenizer, per_doc=4, seed=3) == documents
    assert needle_documents(samples, tokenizer, per_doc=4, seed=4) != documents


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 200), st.integers(0, 2**32))
def test_needle_depths_one_per_stratum(count, seed):
    depths = needle_depths(count, random.Random(seed))
    assert len(depths) == count and all(0 <= d <= 1 for d in depths)
    assert depths == sorted(depths)
    if count >= 2:
        assert depths[0] <= END_SHARE and depths[-1] >= 1 - END_SHARE


def test_too_short_or_too_many(tokenizer, samples):
    with pytest.raises(LongRopeError, match="too short.*fewer needles per document"):
        plant_needles(samples[0][:30], tokenizer, [0.5, 0.6], random.Random(0))
    with pytest.raises(LongRopeError, match="needles"):
        plant_needles(samples[0], tokenizer, [0.5] * (len(NEEDLE_NAMES) + 1), random.Random(0))
    with pytest.raises(LongRopeError, match=">= 1"):
        needle_documents(samples, tokenizer, per_doc=0)
