"""Bits per character: a language-modelling score that does not depend on the tokenizer.

Per-token perplexity rewards a tokenizer that cuts text into more, easier pieces; bits per character divides
the same total NLL by the characters the tokens spell, so models with different tokenizers compare fairly.

``span_bits_per_char`` scores fixed character spans (the same text for every model): ``chars`` characters from
the middle of each of ``n`` documents, each span scored in one forward after BOS (a span that a tokenizer cuts
into more tokens than the model's window: sliding windows, each token scored once).

Python use::

    from longrope.eval.bits_per_char import span_bits_per_char
    bpc = span_bits_per_char(model, tokenizer, StdlibCorpus("test"), chars=600, n=20)
"""

from __future__ import annotations

import torch
from torch import nn

from longrope.data.corpus import Corpus
from longrope.errors import LongRopeError
from longrope.eval.perplexity import nats_to_bits, perplexity
from longrope.loss import token_nll


def bits_per_char(total_nll_nats: float, characters: int) -> float:
    """Total NLL in nats over the characters it scored, in bits per character."""
    if characters <= 0:
        raise LongRopeError("bits per character needs at least one scored character")
    return nats_to_bits(total_nll_nats) / characters


def character_spans(corpus: Corpus, chars: int = 600, n: int = 20) -> list[str]:
    """``chars`` characters from the middle of each of the first ``n`` documents (in corpus order) that are at
    least twice that long; spans start at a line start so they look like the text the model knows."""
    spans = []
    for document in corpus.documents():
        text = document.text
        if len(text) < 2 * chars:
            continue
        start = text.find("\n", len(text) // 2 - chars // 2) + 1
        if 0 < start <= len(text) - chars:
            spans.append(text[start : start + chars])
        if len(spans) == n:
            return spans
    raise LongRopeError(f"corpus {corpus.name!r} has only {len(spans)} documents of at least {2 * chars} characters")


def span_bits_per_char(model: nn.Module, tokenizer, corpus: Corpus, chars: int = 600, n: int = 20) -> float:
    """Bits per character of ``n`` spans of ``chars`` characters, each scored after BOS in one window."""
    window = getattr(model.config, "max_position_embeddings", None)
    bos = tokenizer.bos_token_id
    total_nll, total_chars = 0.0, 0
    for span in character_spans(corpus, chars, n):
        body = tokenizer.encode(span, add_special_tokens=False)
        ids = ([bos] if bos is not None else []) + body
        if window is not None and len(ids) > window:
            # A span the tokenizer cuts finer than the window holds (a table of numbers, say): each token scored
            # once, by sliding windows of the model's window half a window apart.
            total_nll += perplexity(model, [torch.tensor(ids)], mode="sliding", length=window,
                                    stride=max(1, window // 2), progress=False).total_nll
        else:
            with torch.no_grad():
                row = torch.tensor([ids], device=next(model.parameters()).device)
                total_nll += token_nll(model, row)[0].sum().item()
        # Without BOS the first token is never predicted, so its characters are not counted.
        total_chars += len(span) - (0 if bos is not None else len(tokenizer.decode(body[:1])))
    return bits_per_char(total_nll, total_chars)
