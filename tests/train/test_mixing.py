"""LongRoPE2 mixed context-window training: which micro-batches are short (the token share, from the index alone),
the setting in the config, the packed short documents and their position ids, the loss of a packed sequence equal
to its documents scored separately, retrieval windows in the short part, and a mixed run that switches RoPE per
micro-batch and resumes to the same weights. (The CLI option: tests/test_settings.py; the plan key:
tests/recipes/test_plan.py.)"""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import pytest
import torch
from factories import tiny_model

from longrope.attention import patch
from longrope.data.corpus import TextFilesCorpus
from longrope.errors import LongRopeError
from longrope.rope import LinearSpec, LongRopeSpec
from longrope.train import ChunkedCausalLMLoss, FinetuneConfig, finetune
from longrope.train import finetuning as finetune_module
from longrope.train.data import PackedSequences, RetrievalMixed, document_positions, piece_lengths
from longrope.train.mixing import LONG, SHORT, micro_kind, short_probability, short_rows

# ------------------------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize("share", [0.1, 0.2, 0.25, 0.3, 0.5, 0.7])
def test_every_window_of_micro_batches_holds_the_share_as_closely_as_whole_batches_can(share):
    p = short_probability(share, 4096, 4096)
    assert p == Fraction(str(share))  # equal tokens per micro-batch: the micro-batch share is the token share (3/10)
    kinds = [micro_kind(p, m) for m in range(600)]
    assert kinds[0] == (LONG, 0)
    for window in (1, 3, 4, 8, 10):
        for start in range(0, 600 - window, window):  # each optimizer step of `accum = window` micro-batches
            shorts = sum(kind == SHORT for kind, _ in kinds[start:start + window])
            assert math.floor(window * p) <= shorts <= math.ceil(window * p), (window, start)
    # Each stream is read in order, every index once: the ordinal is where that stream has got to.
    for kind in (LONG, SHORT):
        assert [o for k, o in kinds if k == kind] == list(range(sum(k == kind for k, _ in kinds)))
    assert [micro_kind(p, m) for m in range(300, 600)] == kinds[300:]  # a pure function of the index (resume)


def test_the_token_share_holds_when_short_micro_batches_carry_fewer_tokens():
    long_tokens, short_tokens = 4 * 1024, 3 * 256  # e.g. 1024 * 4 long tokens, 3 short rows of 256
    p = short_probability(0.3, long_tokens, short_tokens)
    kinds = [micro_kind(p, m)[0] for m in range(3000)]
    short, long = kinds.count(SHORT) * short_tokens, kinds.count(LONG) * long_tokens
    assert short / (short + long) == pytest.approx(0.3, abs=0.002)


def test_a_short_micro_batch_carries_as_many_tokens_as_a_long_one():
    assert short_rows(4, 1024, 256) == 16 and short_rows(1, 128, 64) == 2
    assert short_rows(1, 100, 256) == 1  # never empty
    assert piece_lengths(256, 256) == [256] and piece_lengths(300, 128) == [100, 100, 100]
    assert piece_lengths(301, 128) == [101, 100, 100] and piece_lengths(50, None) == [50]


def test_the_share_is_validated_and_fingerprinted_only_for_mixed_runs():
    assert FinetuneConfig(length=8, steps=1).mixed_short_share == 0.3
    for bad in (0, 1, 1.5, -0.1, True, float("nan"), "0.3"):
        with pytest.raises(LongRopeError, match="mixed_short_share"):
            FinetuneConfig(length=8, steps=1, mixed=True, mixed_short_share=bad)
    plain = FinetuneConfig(length=8, steps=1)
    assert "mixed_short_share" not in plain.fingerprint()  # runs from before the setting still resume
    assert plain.fingerprint() == FinetuneConfig(length=8, steps=1, mixed_short_share=0.1).fingerprint()
    mixed = FinetuneConfig(length=8, steps=1, mixed=True)
    assert mixed.fingerprint() != FinetuneConfig(length=8, steps=1, mixed=True, mixed_short_share=0.1).fingerprint()
    assert FinetuneConfig.from_dict(mixed.to_dict()) == mixed
    with pytest.raises(LongRopeError, match="short_documents must be one of whole, cut"):
        FinetuneConfig(length=8, steps=1, mixed=True, short_documents="all")
    assert plain.fingerprint() == FinetuneConfig(length=8, steps=1, short_documents="cut").fingerprint()


# ------------------------------------------------------------------------------------ packed short documents


def test_document_positions_restart_at_each_document_and_each_row():
    starts = torch.tensor([[True, False, False, True, False], [False, False, True, False, True]])
    assert document_positions(starts).tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 0]]


@pytest.fixture
def short_corpus(tmp_path):
    corpus = tmp_path / "short-docs"
    corpus.mkdir()
    rng = random.Random(0)
    for i in range(40):
        lines = [f"value_{i}_{j} = {rng.randrange(1000)}" for j in range(rng.randint(1, 4))]
        (corpus / f"doc{i}.py").write_text("\n".join(lines) + "\n")
    return corpus


def test_packed_short_documents_get_position_ids_that_restart_at_each_one(short_corpus, tiny):
    _, tokenizer = tiny
    window = 16
    data = PackedSequences(TextFilesCorpus(short_corpus), tokenizer, 24, seed=1, min_tokens=2, max_tokens=window - 1)
    ids, positions = data.batch(range(12), positions=True)
    assert ids.shape == positions.shape == (12, 24)
    assert torch.equal(ids, PackedSequences(TextFilesCorpus(short_corpus), tokenizer, 24, seed=1, min_tokens=2,
                                            max_tokens=window - 1).batch(range(12)))
    assert int(positions.max()) < window  # every token at a position of the original window
    restarts = positions == 0
    assert bool(restarts[:, 0].all())
    assert torch.equal(restarts[:, 1:], ids[:, 1:] == tokenizer.bos_token_id)  # ... and at every document's BOS
    assert bool(((positions.diff(dim=1) == 1) | restarts[:, 1:]).all())
    again_ids, again_positions = data.batch(range(6, 12), positions=True)  # later indices alone: the same
    assert torch.equal(again_ids, ids[6:]) and torch.equal(again_positions, positions[6:])


def test_cut_documents_are_pieces_of_at_most_the_window(train_corpus_dir, tiny):
    _, tokenizer = tiny
    corpus = TextFilesCorpus(train_corpus_dir)  # long files only
    cut = PackedSequences(corpus, tokenizer, 100, seed=1, min_tokens=2, piece=64)
    ids, positions = cut.batch(range(20), positions=True)
    assert torch.equal(ids, PackedSequences(corpus, tokenizer, 100, seed=1, min_tokens=2).batch(range(20)))
    assert int(positions.max()) == 63  # every piece inside the window ...
    restarts = positions[:, 1:] == 0
    assert bool((restarts & (ids[:, 1:] != tokenizer.bos_token_id)).any())  # ... cut inside the documents
    assert bool(((positions.diff(dim=1) == 1) | restarts).all())


def test_short_retrieval_windows_are_documents_of_at_most_the_window(short_corpus, tiny):
    _, tokenizer = tiny
    data = PackedSequences(TextFilesCorpus(short_corpus), tokenizer, 192, seed=1, min_tokens=2, max_tokens=63)
    mixed = RetrievalMixed(data, 1.0, seed=2, piece=64, names=["alpha_beta", "gamma_delta"])
    ids, positions = mixed.batch(range(3), positions=True)
    for row in range(3):
        assert positions[row].tolist() == list(range(64)) * 3  # three windows of 64, each its own document
        for piece in ids[row].split(64):
            assert piece[0] == tokenizer.bos_token_id
            assert tokenizer.decode(piece[1:]).rstrip("\n").split()[-1].isdigit()  # a value asked for and given
    assert torch.equal(mixed.batch(range(3)), ids)


# ---------------------------------------------------------------------------------------------- the loss


def _per_token_nll(model, ids, positions=None):
    """NLL [B, T-1] of each token, from transformers' own logits (no mask: packing read from the positions)."""
    logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("scaling", ["original", "longrope"])
def test_a_packed_sequence_scores_each_document_as_if_it_were_alone(attention, scaling):
    torch.manual_seed(0)
    model = tiny_model("llama", window=64, attn_implementation=attention).float()
    if scaling == "longrope":  # inside the window: its short factors and attention factor
        patch.apply(model, LongRopeSpec(long_factor=[4.0] * 8, short_factor=[1.0] * 4 + [1.5] * 4, factor=4.0))
    lengths = [(20, 30, 14), (40, 24)]  # two rows, documents of these lengths, each starting with BOS
    docs = [[torch.cat([torch.tensor([1]), torch.randint(3, 97, (n - 1,))]) for n in row] for row in lengths]
    ids = torch.stack([torch.cat(row) for row in docs])  # [2, 64]
    positions = torch.stack([torch.cat([torch.arange(len(d)) for d in row]) for row in docs])

    with torch.no_grad():
        packed = _per_token_nll(model, ids, positions)  # [2, 63]
        for r, row in enumerate(docs):
            start = 0
            for doc in row:
                alone = _per_token_nll(model, doc[None])[0]  # [n-1]
                torch.testing.assert_close(packed[r, start:start + len(doc) - 1], alone, rtol=1e-5, atol=1e-5)
                start += len(doc)
        # The training loss: the mean over the documents' own targets (a document's BOS is not scored).
        ours = ChunkedCausalLMLoss(model, chunk=16)(ids, position_ids=positions, packed=True)
        alone = torch.cat([_per_token_nll(model, d[None])[0] for row in docs for d in row])
        torch.testing.assert_close(ours, alone.mean(), rtol=1e-5, atol=1e-6)
        # The test can fail: one document of 64 tokens scores its later tokens differently.
        plain = _per_token_nll(model, ids)
        assert (plain[0, 20:] - packed[0, 20:]).abs().max() > 1e-3


def test_a_short_pool_read_many_times_over_is_a_warning():
    from types import SimpleNamespace

    pool = SimpleNamespace(total_tokens=18_000, doc_ids=["d"] * 196)
    config = FinetuneConfig(length=1024, steps=160, batch_size=4, mixed=True, mixed_short_share=0.3)
    with pytest.warns(UserWarning, match="196 documents.*11 times over; short_documents = 'cut'"):
        finetune_module._warn_if_repeated(config, pool, 256)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        finetune_module._warn_if_repeated(FinetuneConfig(**{**config.to_dict(), "short_documents": "cut"}), pool, 256)
        finetune_module._warn_if_repeated(FinetuneConfig(**{**config.to_dict(), "steps": 20}), pool, 256)


def test_an_attention_that_cannot_mask_packed_documents_is_refused():
    from types import SimpleNamespace

    for name in ("eager", "sdpa", "flash_attention_2", "flex_attention"):
        finetune_module._check_packing(SimpleNamespace(config=SimpleNamespace(_attn_implementation=name)))
    with pytest.raises(LongRopeError, match="'my_kernel' does not do"):
        finetune_module._check_packing(SimpleNamespace(config=SimpleNamespace(_attn_implementation="my_kernel")))


def test_a_packed_batch_needs_its_positions():
    model = tiny_model("llama", window=64)
    with pytest.raises(LongRopeError, match="position ids"):
        ChunkedCausalLMLoss(model)(torch.ones(1, 8, dtype=torch.long), packed=True)


# --------------------------------------------------------------------------------------------- in finetune


@pytest.fixture
def mixed_corpus(train_corpus_dir, short_corpus):
    """The long training files plus short documents (at most the test model's 64-token window)."""
    for name in train_corpus_dir.iterdir():
        (short_corpus / name.name).write_text(name.read_text())
    return short_corpus


def _config(corpus, **overrides) -> FinetuneConfig:
    values = {"length": 128, "steps": 3, "lr": 2e-3, "batch_size": 1, "accum": 2, "mixed": True,
              "mixed_short_share": 0.4, "corpus": str(corpus), "log_every": 1}
    values.update(overrides)
    return FinetuneConfig(**values)


def test_mixed_training_packs_short_documents_at_the_original_rope_in_the_share_asked(tiny, mixed_corpus, tmp_path,
                                                                                      monkeypatch):
    model, tokenizer = tiny
    spec = LinearSpec(factor=2.0)
    seen = []
    forward = finetune_module.ChunkedCausalLMLoss.forward

    def spy(self, input_ids, position_ids=None, packed=False):
        seen.append((tuple(input_ids.shape), packed, patch.current_spec(self.model), position_ids))
        return forward(self, input_ids, position_ids, packed)

    monkeypatch.setattr(finetune_module.ChunkedCausalLMLoss, "forward", spy)
    config = _config(mixed_corpus, retrieval_fraction=0.5)
    finetune(model, tokenizer, spec, config, tmp_path / "mixed", progress=False)
    # share 0.4 = p: micro-batches L L | S L | S L; a short one holds 2 rows of 64 (as many tokens as a long one).
    assert [(shape, packed, current is None) for shape, packed, current, _ in seen] == [
        ((1, 128), False, False), ((1, 128), False, False), ((2, 64), True, True), ((1, 128), False, False),
        ((2, 64), True, True), ((1, 128), False, False)]
    for _, packed, _, positions in seen:
        if packed:
            assert int(positions.max()) < 64 and bool((positions[:, 0] == 0).all())
    assert patch.current_spec(model) == spec.with_window(64)
    log = [json.loads(line) for line in (tmp_path / "mixed" / "train_log.jsonl").read_text().splitlines()]
    assert "loss_short" not in log[0] and {"loss_long", "loss_short"} <= set(log[-1])
    summary = json.loads((tmp_path / "mixed" / "model" / "longrope_finetune.json").read_text())
    assert summary["short_rows"] == 2 and summary["short_micro_batch_share"] == pytest.approx(0.4)


def test_a_longrope_spec_trains_its_short_regime_on_the_short_documents(tiny, mixed_corpus, tmp_path, monkeypatch):
    model, tokenizer = tiny
    spec = LongRopeSpec(long_factor=[1.0] * 8 + [4.0] * 8, factor=2.0)
    seen = []
    forward = finetune_module.ChunkedCausalLMLoss.forward

    def spy(self, input_ids, position_ids=None, packed=False):
        (module,) = {m for m in self.model.modules() if type(m).__name__ == "ScaledRotaryEmbedding"}
        result = forward(self, input_ids, position_ids, packed)
        seen.append((packed, module.sequence_length))  # the length its tables were chosen for
        return result

    monkeypatch.setattr(finetune_module.ChunkedCausalLMLoss, "forward", spy)
    config = _config(mixed_corpus, steps=2, mixed_short_share=0.5, short_documents="cut")
    finetune(model, tokenizer, spec, config, tmp_path / "lr", progress=False)
    assert [packed for packed, _ in seen] == [False, True, False, True]
    for packed, length in seen:  # the short factors inside the window, the long ones beyond it
        assert (length <= 64) if packed else (length == 128)


def test_an_interrupted_mixed_run_resumes_to_the_same_weights(tiny_model_dir, cache, mixed_corpus, tmp_path,
                                                              monkeypatch):
    from longrope.models.loading import load_model
    from longrope.train import latest_checkpoint

    spec = LinearSpec(factor=2.0)
    config = _config(mixed_corpus, save_every=1, retrieval_fraction=0.5)
    model, tokenizer = load_model(str(tiny_model_dir))
    finetune(model, tokenizer, spec, config, tmp_path / "straight", progress=False)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    class Killed(Exception):
        pass

    def kill_at_step_2(record):
        if record["step"] == 2:
            raise Killed

    monkeypatch.setattr(finetune_module, "_after_step", kill_at_step_2)
    model, tokenizer = load_model(str(tiny_model_dir))
    with pytest.raises(Killed):
        finetune(model, tokenizer, spec, config, tmp_path / "killed", progress=False)
    assert latest_checkpoint(tmp_path / "killed").name == "step-000001"
    monkeypatch.undo()
    model, tokenizer = load_model(str(tiny_model_dir))
    finetune(model, tokenizer, spec, config, tmp_path / "killed", resume=True, progress=False)  # steps 2, 3: S L, S L
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, straight[name], rtol=0, atol=1e-6, msg=name)


def test_the_cli_option_reaches_the_config(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from longrope.cli import app
    from longrope.rope import save_spec

    captured = {}

    def fake_finetune(model, tokenizer, spec, config, out, resume=False, progress=True):
        captured["config"] = config
        return out / "model"

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    monkeypatch.setattr("longrope.models.loading.load_model", lambda name, dtype="float32", device="cpu": (None, None))
    save_spec(LinearSpec(factor=4.0), tmp_path / "spec.json")
    args = ["finetune", "--spec", str(tmp_path / "spec.json"), "--length", "256", "--steps", "2", "--out",
            str(tmp_path / "o"), "--no-progress", "--mixed"]
    result = CliRunner().invoke(app, args + ["--mixed-short-share", "0.1"])
    assert result.exit_code == 0, result.output
    assert (captured["config"].mixed, captured["config"].mixed_short_share) == (True, 0.1)
    result = CliRunner().invoke(app, args + ["--mixed-short-share", "1"])
    assert isinstance(result.exception, LongRopeError) and "mixed_short_share" in str(result.exception)
