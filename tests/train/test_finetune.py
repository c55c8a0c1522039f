"""Fine-tuning at an extended length: the loss at that length goes down, the saved directory reloads with the
same scaling and logits, an interrupted run resumes at the right step with the same result, mixed training
switches RoPE per micro-batch, and out-of-memory becomes advice."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from longrope.attention import patch
from longrope.data.corpus import TextFilesCorpus
from longrope.data.samples import token_samples
from longrope.errors import LongRopeError
from longrope.rope import LinearSpec, LongRopeSpec
from longrope.train import FinetuneConfig, finetune, latest_checkpoint, load_finetuned, mean_nll
from longrope.train import finetuning as finetune_module
from longrope.train.data import PackedSequences

LENGTH = 256  # 4x the test model's window of 64


def _config(corpus, **overrides) -> FinetuneConfig:
    values = {"length": LENGTH, "steps": 12, "schedule": "linear", "lr": 1e-3, "warmup_steps": 2, "batch_size": 2,
              "corpus": str(corpus), "log_every": 1}
    values.update(overrides)
    return FinetuneConfig(**values)


def test_loss_at_the_extended_length_goes_down_and_the_result_reloads(tiny, train_corpus_dir, held_out_dir,
                                                                       tmp_path):
    model, tokenizer = tiny
    spec = LinearSpec(factor=4.0)
    held_out = torch.stack(token_samples(TextFilesCorpus(held_out_dir), tokenizer, LENGTH, 3, seed=0))
    seen = PackedSequences(TextFilesCorpus(train_corpus_dir), tokenizer, LENGTH, min_tokens=LENGTH).batch(range(6))
    patch.apply(model, spec)
    before_held_out, before_seen = mean_nll(model, held_out), mean_nll(model, seen)

    out = finetune(model, tokenizer, spec, _config(train_corpus_dir), tmp_path / "run", progress=False)

    after_held_out, after_seen = mean_nll(model, held_out), mean_nll(model, seen)
    assert after_seen < before_seen - 0.1
    assert after_held_out < before_held_out - 0.01
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    assert log[0]["lr"] == pytest.approx(5e-4) and log[-1]["lr"] < log[2]["lr"]  # warm-up, then linear decay

    # The directory: config keeps the original RoPE (stock transformers loads raw weights); the spec is beside it.
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "default"
    assert config["max_position_embeddings"] == 64
    reloaded, reloaded_tokenizer = load_finetuned(tmp_path / "run")
    assert patch.current_spec(reloaded) == spec.with_window(64)
    assert reloaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=held_out[:1]).logits
        actual = reloaded(input_ids=held_out[:1]).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_interrupted_run_resumes_at_the_checkpoint_step_with_the_same_result(tiny_model_dir, cache,
                                                                              train_corpus_dir, tmp_path, monkeypatch):
    from longrope.models.loading import load_model

    spec = LongRopeSpec(long_factor=[1.0] * 8 + [4.0] * 8, factor=2.0)
    config = _config(train_corpus_dir, length=128, steps=4, batch_size=1, save_every=2, lr=2e-3)

    model, tokenizer = load_model(str(tiny_model_dir))
    finetune(model, tokenizer, spec, config, tmp_path / "straight", progress=False)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    class Killed(Exception):
        pass

    def kill_at_step_3(record):
        if record["step"] == 3:
            raise Killed

    monkeypatch.setattr(finetune_module, "_after_step", kill_at_step_3)
    model, tokenizer = load_model(str(tiny_model_dir))
    with pytest.raises(Killed):
        finetune(model, tokenizer, spec, config, tmp_path / "killed", progress=False)
    assert latest_checkpoint(tmp_path / "killed").name == "step-000002"
    with pytest.raises(LongRopeError, match="already holds"):
        finetune(model, tokenizer, spec, config, tmp_path / "killed", progress=False)
    monkeypatch.undo()

    steps_run = []
    monkeypatch.setattr(finetune_module, "_after_step", lambda record: steps_run.append(record["step"]))
    model, tokenizer = load_model(str(tiny_model_dir))  # a fresh process would start from the base weights
    out = finetune(model, tokenizer, spec, config, tmp_path / "killed", resume=True, progress=False)
    assert steps_run == [3, 4]
    summary = json.loads((out / "longrope_finetune.json").read_text())
    assert summary["resumed_from_step"] == 2
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, straight[name], rtol=0, atol=1e-6, msg=name)
    log = [json.loads(line)["step"] for line in (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]
    # A finished run is returned as is.
    assert finetune(model, tokenizer, spec, config, tmp_path / "killed", resume=True, progress=False) == out
    # A different config cannot resume another run (finished or not).
    with pytest.raises(LongRopeError, match="different config"):
        finetune(model, tokenizer, spec, FinetuneConfig(**{**config.to_dict(), "lr": 1e-4}), tmp_path / "killed",
                 resume=True, progress=False)
    shutil.rmtree(out)
    with pytest.raises(LongRopeError, match="different config"):
        finetune(model, tokenizer, spec, FinetuneConfig(**{**config.to_dict(), "lr": 1e-4}), tmp_path / "killed",
                 resume=True, progress=False)


def test_mixed_training_uses_the_original_rope_for_short_documents(tiny, train_corpus_dir, tmp_path, monkeypatch):
    model, tokenizer = tiny
    # The long files plus short documents (<= the 64-token window).
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in train_corpus_dir.iterdir():
        (corpus / name.name).write_text(name.read_text())
    for i in range(30):
        (corpus / f"short{i}.py").write_text(f"x{i} = {i} * 2\nprint(x{i})\n")
    spec = LinearSpec(factor=2.0)
    seen = []
    forward = finetune_module.ChunkedCausalLMLoss.forward

    def spy(self, input_ids, position_ids=None, packed=False):
        seen.append((tuple(input_ids.shape), patch.current_spec(self.model)))
        return forward(self, input_ids, position_ids, packed)

    monkeypatch.setattr(finetune_module.ChunkedCausalLMLoss, "forward", spy)
    config = _config(corpus, length=128, steps=2, accum=2, batch_size=1, mixed=True, mixed_short_share=0.5,
                     warmup_steps=0)
    finetune(model, tokenizer, spec, config, tmp_path / "mixed", progress=False)
    # A short micro-batch: 2 packed rows of the 64-token window, as many tokens as a long one (test_mixing.py).
    assert [(n, s is None) for n, s in seen] == [((1, 128), False), ((2, 64), True), ((1, 128), False),
                                                 ((2, 64), True)]
    assert patch.current_spec(model) == spec.with_window(64)
    log = [json.loads(line) for line in (tmp_path / "mixed" / "train_log.jsonl").read_text().splitlines()]
    assert {"loss_long", "loss_short"} <= set(log[-1])


def test_out_of_memory_says_which_knob_to_turn(tiny, train_corpus_dir, tmp_path, monkeypatch):
    model, tokenizer = tiny

    def oom(self, input_ids, position_ids=None, packed=False):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(finetune_module.ChunkedCausalLMLoss, "forward", oom)
    with pytest.raises(LongRopeError, match="shorter length.*smaller batch.*more accumulation"):
        finetune(model, tokenizer, LinearSpec(factor=4.0), _config(train_corpus_dir), tmp_path / "oom",
                 progress=False)

    monkeypatch.setattr(finetune_module.ChunkedCausalLMLoss, "forward",
                        lambda self, ids, position_ids=None, packed=False: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(LongRopeError, match="gradient checkpointing"):
        finetune(model, tokenizer, LinearSpec(factor=4.0),
                 _config(train_corpus_dir, gradient_checkpointing=False), tmp_path / "oom2", progress=False)


def test_a_length_no_document_reaches_is_a_clear_error(tiny, train_corpus_dir, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(LongRopeError, match="no document .* has at least 10000000 tokens"):
        finetune(model, tokenizer, LinearSpec(factor=4.0), _config(train_corpus_dir, length=10_000_000),
                 tmp_path / "long", progress=False)


def test_config_validation_and_schedules():
    assert FinetuneConfig(length=8, steps=10).peak_lr == 2e-5
    constant = FinetuneConfig(length=8, steps=10, schedule="constant")
    assert constant.peak_lr == 1e-6 and constant.lr_factor(9) == 1.0
    linear = FinetuneConfig(length=8, steps=10, lr=1e-3, warmup_steps=2)
    assert [round(linear.lr_factor(s), 3) for s in (0, 1, 2, 6)] == [0.5, 1.0, 1.0, 0.5]
    with pytest.raises(LongRopeError, match="schedule"):
        FinetuneConfig(length=8, steps=10, schedule="cosine")
    with pytest.raises(LongRopeError, match="steps"):
        FinetuneConfig(length=8, steps=0)
    with pytest.raises(LongRopeError, match="unknown setting"):
        FinetuneConfig.from_dict({"length": 8, "steps": 1, "lr_max": 3})


def test_the_saved_format_helpers_and_their_old_import_paths(tmp_path):
    from longrope import train
    from longrope.train import saved

    for name in ("save_finetuned", "load_finetuned", "finetuned_dir", "is_finetuned", "latest_checkpoint"):
        assert getattr(finetune_module, name) is getattr(saved, name) is getattr(train, name)
    root = tmp_path / "run" / "checkpoints"
    for step, complete in ((2, True), (10, True), (12, False)):
        (root / f"step-{step:06d}").mkdir(parents=True)
        if complete:
            (root / f"step-{step:06d}" / "trainer_state.json").write_text(json.dumps({"step": step}))
    (root / ".step-000014.tmp").mkdir()
    assert [p.name for p in saved.checkpoints(tmp_path / "run")] == ["step-000002", "step-000010"]
    assert latest_checkpoint(tmp_path / "run") == root / "step-000010"
    assert saved.checkpoint_state(root / "step-000010") == {"step": 10}
    assert latest_checkpoint(tmp_path / "none") is None
    assert not saved.is_finetuned(tmp_path / "run")
    log = tmp_path / "run" / "train_log.jsonl"
    for step in (1, 2, 3):
        saved.append_log(log, {"step": step})
    saved.trim_log(log, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_the_retrieval_mixture_replaces_a_share_of_rows_deterministically(tiny, train_corpus_dir):
    from longrope.data.corpus import TextFilesCorpus
    from longrope.train.data import RetrievalMixed

    _, tokenizer = tiny
    packed = lambda: PackedSequences(TextFilesCorpus(train_corpus_dir), tokenizer, 128, seed=0)  # noqa: E731
    mixed = RetrievalMixed(packed(), 0.5, seed=3)
    plain, batch = packed().batch(range(40)), mixed.batch(range(40))
    assert batch.shape == plain.shape == (40, 128)
    replaced = [k for k in range(40) if not torch.equal(batch[k], plain[k])]
    assert 8 <= len(replaced) <= 32  # about half of the rows
    for k in replaced:  # each one a retrieval window: BOS first, a value asked for and given at the end
        text = tokenizer.decode(batch[k][1:])
        assert batch[k][0] == tokenizer.bos_token_id and text.rstrip("\n").split()[-1].isdigit()
    again = RetrievalMixed(packed(), 0.5, seed=3)  # a resumed run draws the same rows, and later ones alone
    assert torch.equal(again.batch(range(20, 40)), batch[20:40])
    assert torch.equal(RetrievalMixed(packed(), 0.0).batch(range(40)), plain)


def test_finetune_trains_on_the_retrieval_mixture(tiny, train_corpus_dir, tmp_path, monkeypatch):
    model, tokenizer = tiny
    seen = []
    forward = finetune_module.ChunkedCausalLMLoss.forward

    def spy(self, input_ids, position_ids=None, packed=False):
        seen.append(input_ids.clone())
        return forward(self, input_ids, position_ids, packed)

    monkeypatch.setattr(finetune_module.ChunkedCausalLMLoss, "forward", spy)
    config = _config(train_corpus_dir, length=128, steps=4, batch_size=4, retrieval_fraction=1.0, warmup_steps=0)
    finetune(model, tokenizer, LinearSpec(factor=2.0), config, tmp_path / "ft", progress=False)
    texts = [tokenizer.decode(row[1:]) for batch in seen for row in batch]
    assert len(texts) == 16 and all(t.rstrip("\n").split()[-1].isdigit() for t in texts)
    assert "retrieval_fraction" in config.fingerprint()
    assert "retrieval_fraction" not in _config(train_corpus_dir).fingerprint()  # older checkpoints still resume
    with pytest.raises(LongRopeError, match="retrieval_fraction"):
        _config(train_corpus_dir, retrieval_fraction=1.5)
