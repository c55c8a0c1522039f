"""Small deterministic models, data and configs for the search tests (also used by the subprocess workers)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factories import tiny_model

from longrope.search import FitnessData, SearchConfig

WINDOW = 16
FACTOR = 4
LENGTH = WINDOW * FACTOR
VOCAB = 61


def small_model():
    """A random 1-layer Llama, window 16, 8 rotary pairs: identical every time it is built."""
    return tiny_model(window=WINDOW, head_dim=16, heads=2, kv_heads=1, layers=1, vocab=VOCAB, seed=0)


def small_data(docs: int = 3, length: int = LENGTH, seed: int = 0) -> FitnessData:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (docs, length), generator=generator)
    ids[:, 0] = 1  # BOS
    return FitnessData(ids, None, f"{docs} random documents")


def small_config(**overrides) -> SearchConfig:
    values = dict(
        factor=FACTOR,
        population=12,
        parents=6,
        mutations=4,
        crossovers=4,
        generations=4,
        docs=3,
        batch=3,
        dtype=None,
        seed=0,
    )
    values.update(overrides)
    return SearchConfig(**values)


def small_needle_data(docs: int = 3, length: int = LENGTH, seed: int = 0, answer: int = 3) -> FitnessData:
    """Two-objective documents: random tokens whose last ``answer`` tokens repeat ``answer`` tokens from a depth
    that differs per document (a needle read back at the end); the needle mask scores them, the document mask
    every other prediction."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (docs, length), generator=generator)
    ids[:, 0] = 1  # BOS
    needle = torch.zeros(docs, length - 1, dtype=torch.bool)
    for j in range(docs):
        depth = 1 + (j * (length - 2 * answer - 2)) // max(1, docs - 1)
        ids[j, length - answer :] = ids[j, depth : depth + answer]
        needle[j, length - answer - 1 :] = True  # predictions of the last `answer` tokens
    return FitnessData(ids, ~needle, f"{docs} random documents with a needle", needle)
