"""Results that do not depend on the dtype by accident: the tiny model's perplexity in fp32 and bf16, with no
scaling and with a LongRoPE spec, agree within 2% (bf16 rounds each product to 8 bits of mantissa)."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from longrope.data.corpus import get_corpus
from longrope.data.samples import token_samples
from longrope.eval.perplexity import applied, perplexity
from longrope.models.loading import load_model
from longrope.rope import LongRopeSpec

TOLERANCE = 0.02  # relative perplexity difference fp32 vs bf16


@pytest.fixture(scope="module")
def tiny_both():
    model, tokenizer = load_model("tiny", dtype="fp32", device="cpu")
    return model, copy.deepcopy(model).to(torch.bfloat16), tokenizer


def test_tiny_perplexity_agrees_in_fp32_and_bf16(tiny_both):
    fp32, bf16, tokenizer = tiny_both
    samples = token_samples(get_corpus("stdlib", split="test"), tokenizer, 128, 2, seed=3)
    a = perplexity(fp32, samples, length=128, progress=False).ppl
    b = perplexity(bf16, samples, length=128, progress=False).ppl
    assert abs(b / a - 1) < TOLERANCE, (a, b)


def test_a_spec_scores_the_same_in_either_dtype(tiny_both):
    fp32, bf16, tokenizer = tiny_both
    rng = random.Random(0)
    pairs = fp32.config.head_dim // 2 if getattr(fp32.config, "head_dim", None) else 16
    spec = LongRopeSpec(long_factor=tuple(sorted(1 + 1.2 * rng.random() for _ in range(pairs))), factor=2.0)
    samples = token_samples(get_corpus("stdlib", split="validation"), tokenizer, 512, 1, seed=5)
    with applied(fp32, spec):
        a = perplexity(fp32, samples, length=512, progress=False).ppl
    with applied(bf16, spec):
        b = perplexity(bf16, samples, length=512, progress=False).ppl
    assert abs(b / a - 1) < TOLERANCE, (a, b)
