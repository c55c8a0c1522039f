"""PoSE: the position ids (properties, coverage of the target range), the loss with them equals transformers'
own, a PoSE step declares the target length (LongRoPE's long factors), an end-to-end run, the CLI option.
(PoSE in a plan's fine-tune stage: tests/recipes/test_pose_stages.py.)"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from factories import tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from longrope.attention import patch
from longrope.attention.rotary import ScaledRotaryEmbedding
from longrope.data.corpus import TextFilesCorpus
from longrope.errors import LongRopeError
from longrope.rope import LinearSpec, LongRopeSpec, YarnSpec, save_spec
from longrope.train import ChunkedCausalLMLoss, FinetuneConfig, finetune, is_finetuned, load_finetuned
from longrope.train import finetuning as finetune_module
from longrope.train.data import PackedSequences
from longrope.train.pose import pose_batch, pose_position_ids, sequence_generator

# ------------------------------------------------------------------------------------------ the position ids


@settings(max_examples=200, deadline=None)
@given(window=st.integers(2, 300), extra=st.integers(1, 5000), chunks=st.integers(2, 8), seed=st.integers(0, 2**31))
def test_position_ids_are_increasing_chunks_from_zero_below_the_target(window, extra, chunks, seed):
    chunks = min(chunks, window)
    target = window + extra
    ids = pose_position_ids(window, target, chunks, torch.Generator().manual_seed(seed))
    assert ids.shape == (window,) and ids.dtype == torch.long
    assert ids[0] == 0 and int(ids.max()) < target
    steps = ids.diff()
    assert bool((steps >= 1).all())  # strictly increasing
    assert int((steps > 1).sum()) <= chunks - 1  # consecutive within each chunk: jumps only between chunks
    again = pose_position_ids(window, target, chunks, torch.Generator().manual_seed(seed))
    assert torch.equal(ids, again)


@pytest.mark.parametrize("window, target, chunks", [(16, 256, 2), (32, 1024, 2), (24, 300, 3), (8, 4096, 4)])
def test_over_many_windows_the_relative_distances_cover_the_target_range(window, target, chunks):
    covered = torch.zeros(target, dtype=torch.bool)
    for k in range(3000):
        ids = pose_position_ids(window, target, chunks, sequence_generator(7, k))
        distances = ids[:, None] - ids[None, :]  # [window, window]; the causal half is >= 0
        covered[distances[distances >= 0]] = True
    reached = int(covered.nonzero().max())
    assert reached >= target - 1 - target // 100  # close to L' - 1
    assert covered.float().mean() > 0.97  # and nearly every distance in between


def test_batches_are_a_pure_function_of_the_sequence_index():
    batch = pose_batch(32, 512, 2, seed=3, indices=range(4, 8))
    assert batch.shape == (4, 32)
    assert torch.equal(batch[1:], pose_batch(32, 512, 2, seed=3, indices=range(5, 8)))  # resume / other ranks
    assert len({tuple(row.tolist()) for row in batch}) == 4  # one draw per sequence
    assert not torch.equal(batch, pose_batch(32, 512, 2, seed=4, indices=range(4, 8)))


@pytest.mark.parametrize(
    "window, target, chunks, message",
    [(16, 64, 0, "chunks must be an integer >= 2"), (16, 64, 1, "one chunk never skips"),
     (16, 16, 2, r"target length \(16\) must be larger than the training window \(16\)"),
     (16, 8, 2, "must be larger"), (2, 64, 3, "at least one token per chunk")],
)
def test_bad_pose_settings_are_clear_errors(window, target, chunks, message):
    with pytest.raises(LongRopeError, match=message):
        pose_position_ids(window, target, chunks, torch.Generator())
    with pytest.raises(LongRopeError, match=message):
        FinetuneConfig(length=window, steps=1, pose=True, target_length=target, pose_chunks=chunks)


def test_config_pose_fields():
    with pytest.raises(LongRopeError, match="pose needs target_length"):
        FinetuneConfig(length=64, steps=1, pose=True)
    with pytest.raises(LongRopeError, match="target_length is PoSE's target"):
        FinetuneConfig(length=64, steps=1, target_length=256)
    with pytest.raises(LongRopeError, match="pose must be true or false"):
        FinetuneConfig(length=64, steps=1, pose="yes", target_length=256)
    # Without PoSE the fingerprint is what it was before PoSE existed, so older runs still resume.
    assert "pose" not in json.loads(FinetuneConfig(length=64, steps=1).fingerprint())
    on = FinetuneConfig(length=64, steps=1, pose=True, target_length=256)
    assert json.loads(on.fingerprint())["target_length"] == 256
    assert FinetuneConfig.from_dict(on.to_dict()) == on


# ------------------------------------------------------------------------------------------------- the loss


def test_the_loss_with_pose_positions_equals_the_models_own_loss():
    torch.manual_seed(0)
    model = tiny_model("llama", window=64).float()
    patch.apply(model, YarnSpec(factor=8.0))
    ids = torch.randint(3, 97, (2, 48))
    positions = pose_batch(48, 512, 3, seed=0, indices=range(2))
    assert int(positions.max()) > 64  # the window reaches far past the original window

    ours = ChunkedCausalLMLoss(model, chunk=16)(ids, position_ids=positions)
    ours.backward()
    our_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # The explicit mask makes this plain causal attention over the whole window: without one, transformers reads
    # the jumps between chunks as packed documents and attends only within each chunk (not PoSE).
    reference = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions, labels=ids).loss
    reference.backward()

    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
    for mine, theirs in zip(our_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    plain = ChunkedCausalLMLoss(model, chunk=16)(ids)  # the positions matter
    assert abs(plain.item() - ours.item()) > 1e-4


# --------------------------------------------------------------------------------------------- in finetune


@pytest.fixture
def fp32_accelerate():
    """accelerate keeps one mixed-precision setting per process: reset it around a run that asks for fp32."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_a_pose_step_declares_the_target_length_so_longrope_uses_its_long_factors(tiny, train_corpus_dir, tmp_path,
                                                                                   monkeypatch, fp32_accelerate):
    model, tokenizer = tiny
    short = [1.0] * 16
    spec = LongRopeSpec(long_factor=[16.0] * 16, short_factor=short, factor=4.0)
    config = FinetuneConfig(length=40, steps=1, lr=1e-3, batch_size=2, pose=True, target_length=256,
                            corpus=str(train_corpus_dir), mixed_precision="no", log_every=1)
    # The batch and positions the step will see (both pure functions of the seed and the sequence index).
    batch = PackedSequences(TextFilesCorpus(train_corpus_dir), tokenizer, 40, min_tokens=40).batch(range(2))
    positions = pose_batch(40, 256, 2, seed=0, indices=range(2))

    def model_loss(applied):
        patch.apply(model, applied)
        with torch.no_grad(), patch.sequence_length(model, 256):
            mask = torch.ones_like(batch)  # causal over the whole window (see the test above)
            return model(input_ids=batch, attention_mask=mask, position_ids=positions, labels=batch).loss.item()

    long_loss = model_loss(spec)
    short_loss = model_loss(dataclasses.replace(spec, long_factor=tuple(short)))  # the short table, same scale
    assert abs(long_loss - short_loss) > 1e-3
    patch.restore(model)

    seen = []

    def record(entry):
        rotary = [m for m in model.modules() if isinstance(m, ScaledRotaryEmbedding)]
        seen.append((entry["loss"], {m.sequence_length for m in rotary}))

    monkeypatch.setattr(finetune_module, "_after_step", record)
    finetune(model, tokenizer, spec, config, tmp_path / "run", progress=False)

    (loss, lengths), = seen
    assert lengths == {256}  # tables chosen for L' = 256 > window 64: LongRoPE's long factors
    assert loss == pytest.approx(long_loss, rel=1e-5)


def test_finetune_with_pose_runs_end_to_end_and_saves(tiny, train_corpus_dir, tmp_path):
    model, tokenizer = tiny
    spec = LinearSpec(factor=8.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = FinetuneConfig(length=32, steps=2, lr=1e-3, pose=True, target_length=512, pose_chunks=3,
                            corpus=str(train_corpus_dir), log_every=1)
    out = finetune(model, tokenizer, spec, config, tmp_path / "run", progress=False)

    assert is_finetuned(tmp_path / "run")
    summary = json.loads((out / "longrope_finetune.json").read_text())
    assert summary["config"]["pose"] is True and summary["config"]["target_length"] == 512
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    reloaded, _ = load_finetuned(tmp_path / "run")
    assert patch.current_spec(reloaded) == spec.with_window(64)


# ------------------------------------------------------------------------------------------ CLI and plans


def test_the_cli_option_reaches_the_config(tmp_path, monkeypatch):
    from longrope.cli import app

    captured = {}

    def fake_finetune(model, tokenizer, spec, config, out, resume=False, progress=True):
        captured["config"] = config
        return out / "model"

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    monkeypatch.setattr("longrope.models.loading.load_model", lambda name, dtype="float32", device="cpu": (None, None))
    spec_file = tmp_path / "spec.json"
    save_spec(LinearSpec(factor=4.0), spec_file)
    args = ["finetune", "--spec", str(spec_file), "--length", "64", "--steps", "2", "--out", str(tmp_path / "o"),
            "--no-progress"]

    result = CliRunner().invoke(app, args + ["--pose", "--target-length", "1024", "--pose-chunks", "3"])
    assert result.exit_code == 0, result.output
    config = captured["config"]
    assert (config.pose, config.target_length, config.pose_chunks, config.length) == (True, 1024, 3, 64)

    result = CliRunner().invoke(app, args + ["--pose", "--target-length", "64"])
    assert isinstance(result.exception, LongRopeError) and "must be larger than the training window" in str(
        result.exception)
    result = CliRunner().invoke(app, args + ["--pose", "--target-length", "1024", "--pose-chunks", "0"])
    assert isinstance(result.exception, LongRopeError) and "chunks must be" in str(result.exception)
