"""Tokenised samples: exact length, BOS, reproducible by seed, cached on disk, clear errors."""

from __future__ import annotations

import pytest
import torch

from longrope.data import samples as samples_module
from longrope.data.corpus import TextFilesCorpus
from longrope.data.samples import count_tokens, document_lengths, token_samples, tokenizer_fingerprint
from longrope.errors import LongRopeError
from longrope.models.tiny import train_tokenizer

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(200)) for i in range(20)]
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("LONGROPE_CACHE", str(root))
    return root


@pytest.fixture
def corpus(tmp_path):
    """Ten documents of growing length: doc0 has 5 words, doc9 has 50."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(10):
        # Each starts at a different word so that cut samples differ.
        (folder / f"doc{i}.txt").write_text(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(5 * (i + 1))))
    return TextFilesCorpus(folder)


def test_samples_have_exact_length_and_start_with_bos(cache, corpus, tokenizer):
    result = token_samples(corpus, tokenizer, min_tokens=20, n=3, seed=0)
    assert len(result) == 3
    for sample in result:
        assert sample.dtype == torch.long and sample.shape == (20,)
        assert sample[0].item() == tokenizer.bos_token_id
    without_bos = token_samples(corpus, tokenizer, min_tokens=20, n=3, seed=0, add_bos=False)
    assert all(s[0].item() != tokenizer.bos_token_id for s in without_bos)


def test_samples_are_reproducible_by_seed(cache, corpus, tokenizer):
    first = token_samples(corpus, tokenizer, min_tokens=10, n=4, seed=1)
    again = token_samples(corpus, tokenizer, min_tokens=10, n=4, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    different = [token_samples(corpus, tokenizer, min_tokens=10, n=4, seed=s) for s in range(2, 6)]
    assert any(not all(torch.equal(a, b) for a, b in zip(first, other)) for other in different)


def test_second_call_reads_the_cache(cache, corpus, tokenizer, monkeypatch):
    first = token_samples(corpus, tokenizer, min_tokens=15, n=2, seed=0)
    assert list((cache / "samples").glob("samples-*.pt"))

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr(samples_module, "encode_documents", no_tokenising)
    second = token_samples(corpus, tokenizer, min_tokens=15, n=2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert document_lengths(corpus, tokenizer)  # lengths cached too
    assert not list((cache / "samples").glob("*.tmp")), "temporary files left behind"


def test_document_lengths_count_bos(cache, corpus, tokenizer):
    with_bos = document_lengths(corpus, tokenizer)
    without = document_lengths(corpus, tokenizer, add_bos=False)
    assert sorted(with_bos) == [f"doc{i}.txt" for i in range(10)]
    assert all(with_bos[k] == without[k] + 1 for k in with_bos)
    assert count_tokens(corpus, tokenizer) == sum(with_bos.values())


def test_no_document_long_enough_names_the_longest(cache, corpus, tokenizer):
    longest = max(document_lengths(corpus, tokenizer).values())
    with pytest.raises(LongRopeError, match=f"the longest has {longest}"):
        token_samples(corpus, tokenizer, min_tokens=longest + 1, n=1)


def test_too_few_documents_says_how_many_qualify(cache, corpus, tokenizer):
    lengths = sorted(document_lengths(corpus, tokenizer).values())
    min_tokens = lengths[-3]  # exactly three documents qualify
    with pytest.raises(LongRopeError, match="only 3 documents"):
        token_samples(corpus, tokenizer, min_tokens=min_tokens, n=5)
    fewer = token_samples(corpus, tokenizer, min_tokens=min_tokens, n=5, allow_fewer=True)
    assert len(fewer) == 3 and all(s.shape == (min_tokens,) for s in fewer)
    with pytest.raises(LongRopeError, match="only 3 documents"):  # a cached short answer is not reused
        token_samples(corpus, tokenizer, min_tokens=min_tokens, n=5)


def test_bad_arguments(cache, corpus, tokenizer):
    with pytest.raises(LongRopeError):
        token_samples(corpus, tokenizer, min_tokens=0, n=1)


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch, corpus, tokenizer):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LONGROPE_CACHE", str(blocker / "sub"))
    with pytest.raises(PermissionError, match="LONGROPE_CACHE"):
        token_samples(corpus, tokenizer, min_tokens=5, n=1)


def test_fingerprint_tells_tokenizers_apart(tokenizer):
    other = train_tokenizer(["completely different text " * 50], vocab_size=280)
    assert tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(tokenizer)
    assert tokenizer_fingerprint(tokenizer) != tokenizer_fingerprint(other)


@pytest.mark.parametrize("junk", [b"not a pickle", b"", b"PK\x03\x04 a broken zip"])
def test_a_damaged_sample_cache_is_built_again_with_a_note(cache, corpus, tokenizer, junk, capsys):
    first = token_samples(corpus, tokenizer, min_tokens=20, n=3, seed=0)
    (path,) = (cache / "samples").glob("samples-*.pt")
    path.write_bytes(junk)
    capsys.readouterr()
    again = token_samples(corpus, tokenizer, min_tokens=20, n=3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert f"note: the cache file {path} cannot be read" in capsys.readouterr().err
    assert torch.load(path, weights_only=True).shape == (3, 20)  # and it is whole again


def test_a_damaged_lengths_cache_is_counted_again_with_a_note(cache, corpus, tokenizer, capsys):
    lengths = document_lengths(corpus, tokenizer)
    (path,) = (cache / "samples").glob("lengths-*.json")
    path.write_text('["not", "counts"]')
    assert document_lengths(corpus, tokenizer) == lengths
    assert f"note: the cache file {path} holds no token counts" in capsys.readouterr().err
