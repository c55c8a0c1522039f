"""Perplexity: agreement with transformers' loss, sliding-window coverage, chunked head memory, bad input."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from factories import tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from longrope.errors import LongRopeError
from longrope.eval.perplexity import evaluate_ppl, perplexity, sliding_windows, write_ppl_report
from longrope.rope import make_spec


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", window=64)


@pytest.fixture(scope="module")
def samples():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 97, (3, 200), generator=g)
    ids[:, 0] = 1  # BOS
    return list(ids)


def test_truncate_matches_transformers_loss(model, samples):
    result = perplexity(model, samples, mode="truncate", length=150, progress=False)
    assert result.tokens == [149, 149, 149]
    with torch.no_grad():
        reference = [model(s[None, :150], labels=s[None, :150]).loss.item() for s in samples]
    for ours, ref in zip(result.nll, reference):
        assert abs(ours - ref) / ref < 1e-4
    assert math.isclose(result.ppl, math.exp(sum(reference) / 3), rel_tol=1e-4)


def slow_sliding_reference(model, ids: torch.Tensor, length: int, stride: int) -> tuple[float, int, list[int]]:
    """Loop windows, full logits, score positions not scored by the previous window (HF perplexity recipe)."""
    total, count, scored = 0.0, 0, []
    previous_end = 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + length, ids.numel())
        with torch.no_grad():
            logits = model(ids[None, begin:end]).logits[0].float()  # [w, V]
        for pos in range(max(previous_end, begin + 1), end):
            total += F.cross_entropy(logits[pos - begin - 1][None], ids[pos][None]).item()
            count += 1
            scored.append(pos)
        previous_end = end
        if end == ids.numel():
            break
    return total, count, scored


@pytest.mark.parametrize("length,stride", [(64, 40), (50, 49), (128, 100)])
def test_sliding_matches_slow_reference(model, samples, length, stride):
    result = perplexity(model, samples[:2], mode="sliding", length=length, stride=stride, progress=False)
    for i, sample in enumerate(samples[:2]):
        total, count, scored = slow_sliding_reference(model, sample, length, stride)
        assert scored == list(range(1, sample.numel()))  # each token after BOS exactly once
        assert result.tokens[i] == count == sample.numel() - 1
        assert abs(result.nll[i] - total / count) < 1e-4 * total / count


@settings(max_examples=200, deadline=None)
@given(total=st.integers(2, 400), length=st.integers(2, 80), data=st.data())
def test_sliding_windows_score_every_token_once(total, length, data):
    stride = data.draw(st.integers(1, length - 1)) if length > 1 else 1
    covered = []
    for begin, end, first in sliding_windows(total, length, stride):
        assert end - begin <= length and begin < first <= end
        covered += range(first, end)
    assert covered == list(range(1, total))


def test_head_never_sees_all_positions_at_once():
    """With a 50k vocabulary the head's output is at most chunk x vocab, never tokens x vocab."""
    big = tiny_model("llama", window=64, vocab=50_000)
    ids = torch.randint(3, 50_000, (1, 600))
    biggest = []
    handle = big.get_output_embeddings().register_forward_hook(lambda m, a, out: biggest.append(out.numel()))
    seen = []
    original = torch.logsumexp  # the loss's only pass over the logits

    def spy(input, *args, **kwargs):
        seen.append(input.numel())
        return original(input, *args, **kwargs)

    try:
        torch.logsumexp = spy
        result = perplexity(big, list(ids), mode="truncate", length=600, chunk=128, progress=False)
    finally:
        torch.logsumexp = original
        handle.remove()
    assert result.tokens == [599]
    assert max(biggest) <= 128 * 50_000 < 599 * 50_000
    assert seen and max(seen) <= 128 * 50_000


@pytest.mark.parametrize("kwargs,message", [
    ({"length": 0}, "length must be an integer >= 2"),
    ({"length": -5}, "length must be an integer >= 2"),
    ({"length": 300}, "fewer than the length 300"),
    ({"length": 64, "mode": "sliding", "stride": 64}, "stride (64) must be smaller"),
    ({"length": 64, "mode": "sliding", "stride": 0}, "stride must be a positive integer"),
    ({"length": 64, "mode": "bogus"}, "unknown perplexity mode"),
    ({"length": 64, "chunk": 0}, "chunk must be a positive integer"),
])
def test_bad_input_is_a_clear_error(model, samples, kwargs, message):
    with pytest.raises(LongRopeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        perplexity(model, samples, progress=False, **kwargs)


def test_no_samples_is_an_error(model):
    with pytest.raises(LongRopeError, match="no samples"):
        perplexity(model, [], length=10, progress=False)


@pytest.fixture(scope="module")
def files_corpus(tmp_path_factory):
    from longrope.data.corpus import TextFilesCorpus

    root = tmp_path_factory.mktemp("docs")
    for i in range(4):
        (root / f"doc{i}.py").write_text("".join(f"value_{j} = {i * j}  # line {j}\n" for j in range(60 + 40 * i)))
    return TextFilesCorpus(root)


def test_evaluate_ppl_table_and_report(tiny_loaded, files_corpus, tmp_path):
    model, tokenizer = tiny_loaded
    specs = {"none": make_spec("none"), "pi": make_spec("pi", factor=2)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = evaluate_ppl(model, tokenizer, specs, files_corpus, lengths=[128, 64], n_docs=2, progress=False)
    assert table.lengths == [64, 128]
    ppl = table.ppl()
    assert set(ppl) == {"none", "pi"} and all(math.isfinite(v) and v > 1 for by in ppl.values() for v in by.values())
    # none is built for the 64-token window: 128 warns; pi x2 is built for 128: no warning for it
    texts = [str(w.message) for w in caught]
    assert any(t.startswith("none: length 128") for t in texts)
    assert not any(t.startswith("pi:") for t in texts)
    assert not hasattr(model, "_longrope_patch")  # model left as it was

    paths = write_ppl_report(table, tmp_path / "out", {"model": "test"}, seed=0)
    data = json.loads(paths["json"].read_text())
    for key in ("settings", "environment", "seed", "mode", "lengths", "specs", "ppl", "results", "warnings"):
        assert key in data
    assert {"python", "torch", "transformers", "longrope"} <= set(data["environment"])
    assert len(data["results"]["pi"]["64"]["samples"]) == 2
    assert "| method | 64 | 128 |" in paths["markdown"].read_text()
    assert paths["plot"].stat().st_size > 1000 and paths["plot"].read_bytes()[:4] == b"\x89PNG"


def test_evaluate_ppl_sliding_scores_whole_samples(tiny_loaded, files_corpus):
    model, tokenizer = tiny_loaded
    table = evaluate_ppl(model, tokenizer, {"none": make_spec("none")}, files_corpus, lengths=[64, 32], n_docs=1,
                         mode="sliding", stride=24, sample_tokens=96, progress=False)
    assert all(r.tokens == [95] for r in table.results["none"].values())


def test_length_beyond_every_document_says_how_many_qualify(tiny_loaded, files_corpus):
    from longrope.data.samples import document_lengths

    model, tokenizer = tiny_loaded
    longest, second = sorted(document_lengths(files_corpus, tokenizer).values())[-2:][::-1]
    between = (longest + second) // 2
    with pytest.raises(LongRopeError, match=f"only 1 documents .* at least {between} tokens, 2 requested"):
        evaluate_ppl(model, tokenizer, {"none": make_spec("none")}, files_corpus, lengths=[between], n_docs=2,
                     progress=False)
    with pytest.raises(LongRopeError, match="no document"):
        evaluate_ppl(model, tokenizer, {"none": make_spec("none")}, files_corpus, lengths=[100_000], n_docs=1,
                     progress=False)
    with pytest.raises(LongRopeError, match="every length must be an integer >= 2"):
        evaluate_ppl(model, tokenizer, {"none": make_spec("none")}, files_corpus, lengths=[0], n_docs=1,
                     progress=False)
