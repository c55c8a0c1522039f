"""Training sequences: documents packed end to end and cut into sequences of exactly ``length`` tokens.

Each document becomes ``BOS tokens EOS``; documents follow each other in a seeded random order (a new order
each epoch) and the stream is cut every ``length`` tokens. Sequence ``k`` is a pure function of (corpus,
tokenizer, pool, length, seed, k), so resuming a run only needs the number of sequences already consumed, and
each process of a distributed run takes its own indices.

``batch(indices, positions=True)`` also returns DOCUMENT position ids: they restart at 0 where a document starts
(and at the start of each sequence, where a document cut by the previous one continues). Given those ids and no
attention mask, transformers (5.x, eager, SDPA and flash attention alike) attends only within each document:
the packed short sequences of LongRoPE2's mixed training (`longrope.train.mixing`), where each document sees
the positions of the original window.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import torch

from longrope.data.corpus import Corpus
from longrope.data.retrieval import CURRICULUM_COMPOSED_NAMES, CURRICULUM_PAIRING, curriculum_names, retrieval_window
from longrope.data.samples import document_lengths, encode_documents
from longrope.errors import LongRopeError


class PackedSequences:
    """Sequences of ``length`` tokens packed from the documents whose token count is in [min_tokens, max_tokens].

    ``batch(indices)`` stacks the sequences ``indices``. Documents are tokenised lazily, only as far as the
    stream has been read. ``piece``: in the document position ids, a document longer than ``piece`` tokens is
    pieces of ``piece`` tokens, each read as a document of its own (so no position reaches ``piece``).
    """

    def __init__(self, corpus: Corpus, tokenizer, length: int, seed: int = 0, min_tokens: int = 1,
                 max_tokens: int | None = None, what: str = "training", piece: int | None = None):
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.length = int(length)
        self.seed = seed
        self.piece = piece
        lengths = document_lengths(corpus, tokenizer, add_bos=True)
        eos = 1 if tokenizer.eos_token_id is not None else 0
        pool = {doc_id: n + eos for doc_id, n in lengths.items()
                if n >= min_tokens and (max_tokens is None or n <= max_tokens)}
        if not pool:
            longest = max(lengths.values(), default=0)
            bounds = f"at least {min_tokens}" if max_tokens is None else f"between {min_tokens} and {max_tokens}"
            raise LongRopeError(
                f"{what}: no document of {corpus!r} has {bounds} tokens (the longest has {longest}); "
                "use a shorter length or a corpus with longer documents"
            )
        self.doc_ids = sorted(pool)
        self.doc_tokens = pool
        self.total_tokens = sum(pool.values())
        self.longest = max(pool.values())
        self._order: list[str] = []  # documents in stream order, epochs appended as needed
        self._epochs = 0
        self._stream = torch.empty(0, dtype=torch.long)
        self._starts = torch.empty(0, dtype=torch.bool)  # True at each document's first token, aligned with _stream
        self._offset = 0  # absolute token index of _stream[0] (tokens before it were dropped)
        self._stream_docs = 0  # how many of _order have been tokenised into the stream

    def _extend_order(self) -> None:
        order = list(self.doc_ids)
        random.Random(f"{self.seed}:{self._epochs}").shuffle(order)
        self._order.extend(order)
        self._epochs += 1

    def _ensure(self, stop: int) -> None:
        """Tokenise documents until the stream reaches absolute token ``stop``."""
        position = self._offset + self._stream.numel()
        if position >= stop:
            return
        needed, index = [], self._stream_docs
        while position < stop:
            while index >= len(self._order):
                self._extend_order()
            needed.append(self._order[index])
            position += self.doc_tokens[self._order[index]]
            index += 1
        wanted = set(needed)
        eos = self.tokenizer.eos_token_id
        encoded = {
            doc_id: ids + ([eos] if eos is not None else [])
            for doc_id, ids in encode_documents((d for d in self.corpus.documents() if d.id in wanted),
                                                self.tokenizer, add_bos=True)
        }
        pieces = [self._stream] + [torch.tensor(encoded[doc_id], dtype=torch.long) for doc_id in needed]
        starts = [self._starts]
        for doc_id in needed:
            first = torch.zeros(len(encoded[doc_id]), dtype=torch.bool)
            first[:: self.piece or len(first)] = True
            starts.append(first)
        self._stream = torch.cat(pieces)
        self._starts = torch.cat(starts)
        self._stream_docs = index

    def batch(self, indices: Sequence[int], positions: bool = False):
        """[len(indices), length] long tensor of sequences ``indices``; with ``positions``, the pair (sequences,
        document position ids [len(indices), length]: see the module docstring).

        Indices must not decrease from call to call: tokens before the smallest index asked are dropped, so
        memory stays bounded over a long run.
        """
        first = min(indices)
        if first * self.length < self._offset:
            raise IndexError(f"sequence {first} was already dropped from the stream")
        self._ensure((max(indices) + 1) * self.length)
        drop = first * self.length - self._offset
        if drop > 0:
            self._stream = self._stream[drop:].clone()
            self._starts = self._starts[drop:].clone()
            self._offset += drop
        spans = [slice(k * self.length - self._offset, (k + 1) * self.length - self._offset) for k in indices]
        rows = torch.stack([self._stream[span] for span in spans])
        if not positions:
            return rows
        return rows, document_positions(torch.stack([self._starts[span] for span in spans]))


def document_positions(starts: torch.Tensor) -> torch.Tensor:
    """Position ids [B, T] that restart at 0 wherever ``starts`` [B, T] (bool) is True, and at column 0."""
    starts = starts.clone()
    starts[:, 0] = True
    index = torch.arange(starts.shape[1]).expand_as(starts)
    last_start = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - last_start


def piece_lengths(length: int, piece: int | None) -> list[int]:
    """``length`` split into the fewest near-equal parts of at most ``piece`` tokens (one part without ``piece``)."""
    count = 1 if piece is None else -(-length // piece)
    return [length // count + (1 if i < length % count else 0) for i in range(count)]


class RetrievalMixed:
    """``sequences`` with a share of their rows replaced by retrieval windows of the same length
    (`longrope.data.retrieval`: values defined at random depths, one asked for at the end, filler taken from the
    replaced row). Fine-tuning on the mixture a model was pre-trained with keeps its retrieval while the window
    grows. Whether row ``k`` is replaced, and by what, is a pure function of (seed, k), so resuming needs no
    state. Names for the definitions: the identifiers of the first ``name_documents`` documents of ``corpus``
    and names composed from them, as in the built-in model's pre-training (`longrope.data.retrieval`), or
    ``names`` when given.

    ``piece``: the longest retrieval window (the original window, for the short sequences of mixed training); a
    replaced row longer than that holds several windows, each its own document (``batch(..., positions=True)``
    restarts the position ids at each).
    """

    def __init__(self, sequences: PackedSequences, fraction: float, seed: int = 0, name_documents: int = 300,
                 piece: int | None = None, names: list[str] | None = None):
        self.sequences = sequences
        self.length = sequences.length
        self.fraction = fraction
        self.seed = seed
        self.pieces = piece_lengths(self.length, piece)
        if names is None:
            texts = (d.text for d in itertools.islice(sequences.corpus.documents(), name_documents))
            names = curriculum_names(texts, CURRICULUM_COMPOSED_NAMES, seed)
        self.names = names

    def batch(self, indices: Sequence[int], positions: bool = False):
        """As `PackedSequences.batch`, with the replaced rows' tokens (and position ids) in place."""
        batch, ids = self.sequences.batch(indices, positions=True) if positions else (
            self.sequences.batch(indices), None)
        for row, index in enumerate(indices):
            rng = random.Random(f"retrieval:{self.seed}:{index}")
            if rng.random() < self.fraction:
                windows = [retrieval_window(batch[row], n, self.sequences.tokenizer, self.names, rng,
                                            pairing=CURRICULUM_PAIRING) for n in self.pieces]
                batch[row] = torch.cat(windows)
                if ids is not None:
                    ids[row] = torch.cat([torch.arange(n) for n in self.pieces])
        return batch if ids is None else (batch, ids)
