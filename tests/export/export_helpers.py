"""Helpers for export tests: factor tables for the 8-pair tiny models, a byte-level BPE tokenizer, models."""

from __future__ import annotations

WINDOW = 64
LONG = [1.0 + 0.4 * i for i in range(8)]  # head_dim 16 -> 8 rotary pairs
SHORT = [1.0 + 0.02 * i for i in range(8)]


def make_tokenizer():
    """A small byte-level BPE (the kind the built-in tiny model uses), trained in memory; ids 0-2 are special."""
    from factories import make_bpe_tokenizer

    return make_bpe_tokenizer()


def tiny_with_tokenizer(arch: str, tokenizer, seed: int = 0):
    """A tiny random model whose vocabulary is the tokenizer's (so GGUF tokens and embeddings line up)."""
    from factories import tiny_model

    return tiny_model(arch, seed=seed, vocab=len(tokenizer), bos_token_id=0, eos_token_id=1, pad_token_id=2)
