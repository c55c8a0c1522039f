"""Tokenised samples: documents of at least N tokens, cut to exactly N, chosen reproducibly and cached on disk.

Two caches live under ``longrope.paths.cache_dir("samples")``:

- document lengths (tokens per document) per corpus split and tokenizer, so the scan for long documents is
  paid once;
- the samples themselves, keyed by corpus, split, tokenizer, ``min_tokens``, ``n``, ``seed`` and ``add_bos``.

Every cache file is written to a temporary file and moved into place with ``os.replace``, so a killed process
never leaves a half-written cache behind; one damaged otherwise (a full disk, another program) is built again,
with a note.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Iterable, Iterator

import torch

from longrope.atomic import atomic_write_bytes, atomic_write_text
from longrope.data.corpus import Corpus, Document
from longrope.errors import LongRopeError
from longrope.notes import note
from longrope.paths import cache_dir

_ENCODE_BATCH = 32  # documents per batch call: the fast tokenizer parallelises inside a batch


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash identifying a tokenizer: its class, name_or_path, special tokens and full vocabulary."""
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__name__.encode())
    digest.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    digest.update(f"bos={getattr(tokenizer, 'bos_token_id', None)}".encode())
    vocab = tokenizer.get_vocab()
    for token, index in sorted(vocab.items(), key=lambda item: item[1]):
        digest.update(f"{index}\0{token}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _bos_prefix(tokenizer, add_bos: bool) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return [bos] if add_bos and bos is not None else []


def encode_documents(
    documents: Iterable[Document], tokenizer, add_bos: bool = True
) -> Iterator[tuple[str, list[int]]]:
    """Yield ``(document id, token ids)``, tokenising in batches; BOS first when asked and the tokenizer has one.

    Special tokens are added by hand (``add_special_tokens=False``) so every tokenizer behaves the same.
    """
    prefix = _bos_prefix(tokenizer, add_bos)
    batch: list[Document] = []

    def flush() -> Iterator[tuple[str, list[int]]]:
        encoded = tokenizer([d.text for d in batch], add_special_tokens=False)["input_ids"]
        for document, ids in zip(batch, encoded):
            yield document.id, prefix + list(ids)
        batch.clear()

    for document in documents:
        batch.append(document)
        if len(batch) == _ENCODE_BATCH:
            yield from flush()
    if batch:
        yield from flush()


def document_lengths(corpus: Corpus, tokenizer, add_bos: bool = True) -> dict[str, int]:
    """Token count of every document of ``corpus`` (BOS included if ``add_bos``), cached on disk."""
    path = (
        cache_dir("samples")
        / f"lengths-{_key(corpus.cache_key, tokenizer_fingerprint(tokenizer), add_bos)}.json"
    )
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            if isinstance(cached, dict) and all(isinstance(v, int) for v in cached.values()):
                return cached
            problem = "holds no token counts"
        except (OSError, ValueError, RecursionError) as exc:
            problem = f"cannot be read: {type(exc).__name__}"
        note(f"the cache file {path} {problem}; counting again")
    lengths = {doc_id: len(ids) for doc_id, ids in encode_documents(corpus.documents(), tokenizer, add_bos)}
    atomic_write_text(path, json.dumps(lengths))
    return lengths


def count_tokens(corpus: Corpus, tokenizer, add_bos: bool = True) -> int:
    """Total tokens in ``corpus`` (uses the cached document lengths)."""
    return sum(document_lengths(corpus, tokenizer, add_bos).values())


def _cached_samples(path, min_tokens: int) -> torch.Tensor | None:
    """The ``[samples, min_tokens]`` tensor cached in ``path``, or None (with a note) when it is not one."""
    try:
        cached = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises KeyError, EOFError, UnpicklingError... on junk
        problem = f"cannot be read ({type(exc).__name__})"
    else:
        if isinstance(cached, torch.Tensor) and cached.dtype == torch.long and cached.dim() == 2 \
                and cached.shape[1] == min_tokens:
            return cached
        problem = "holds no token samples"
    note(f"the cache file {path} {problem}; building it again")
    return None


def token_samples(
    corpus: Corpus,
    tokenizer,
    min_tokens: int,
    n: int,
    seed: int = 0,
    add_bos: bool = True,
    allow_fewer: bool = False,
) -> list[torch.Tensor]:
    """``n`` documents with at least ``min_tokens`` tokens, each cut to exactly ``min_tokens`` (1-D long tensors).

    BOS is prepended (and counted) when ``add_bos`` and the tokenizer has one. Documents are drawn from the
    qualifying ones with ``random.Random(seed)``, so the same seed gives the same samples. If fewer than ``n``
    qualify, returns them all when ``allow_fewer``, else raises ``LongRopeError`` saying how many qualify.
    """
    if min_tokens < 1 or n < 1:
        raise LongRopeError(f"min_tokens and n must be positive (got min_tokens={min_tokens}, n={n})")
    fingerprint = tokenizer_fingerprint(tokenizer)
    path = (
        cache_dir("samples")
        / f"samples-{_key(corpus.cache_key, fingerprint, min_tokens, n, seed, add_bos)}.pt"
    )
    if path.exists():
        cached = _cached_samples(path, min_tokens)
        if cached is not None and (cached.shape[0] == n or allow_fewer):
            return list(cached.unbind(0))

    lengths = document_lengths(corpus, tokenizer, add_bos)
    qualifying = sorted(doc_id for doc_id, length in lengths.items() if length >= min_tokens)
    if not qualifying:
        longest = max(lengths.values(), default=0)
        raise LongRopeError(
            f"no document of {corpus!r} has {min_tokens} tokens; the longest has {longest}. "
            "Use a shorter length or a corpus with longer documents"
        )
    if len(qualifying) < n and not allow_fewer:
        raise LongRopeError(
            f"only {len(qualifying)} documents of {corpus!r} have at least {min_tokens} tokens, {n} requested; "
            "ask for fewer samples, a shorter length, or allow fewer"
        )
    chosen = random.Random(seed).sample(qualifying, min(n, len(qualifying)))
    wanted = set(chosen)
    by_id = {
        doc_id: ids[:min_tokens]
        for doc_id, ids in encode_documents(
            (d for d in corpus.documents() if d.id in wanted), tokenizer, add_bos
        )
    }
    stacked = torch.tensor([by_id[doc_id] for doc_id in chosen], dtype=torch.long)  # [samples, min_tokens]

    buffer = io.BytesIO()
    torch.save(stacked, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return list(stacked.unbind(0))
