"""Helpers for export tests: factor tables for the 8-pair tiny models, a byte-level BPE tokenizer, models."""

from __future__ import annotations

WINDOW = 64
LONG = [1.0 + 0.4 * i for i in range(8)]  # head_dim 16 -> 8 rotary pairs
SHORT = [1.0 + 0.02 * i for i in range(8)]


def make_tokenizer():
    """A small byte-level BPE (the kind the built-in tiny model uses), trained in memory; ids 0-2 are special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def hello(world):\n    return world + 1\n", "the quick brown fox jumps"] * 50, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_with_tokenizer(arch: str, tokenizer, seed: int = 0):
    """A tiny random model whose vocabulary is the tokenizer's (so GGUF tokens and embeddings line up)."""
    from factories import tiny_model

    return tiny_model(arch, seed=seed, vocab=len(tokenizer), bos_token_id=0, eos_token_id=1, pad_token_id=2)
