"""The built-in model shipped with the package: its files match their sha256, its logits match the stored
ones, it retrieves a passkey inside its window, and a damaged or missing file is a clear error, never a load."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from longrope.errors import LongRopeError
from longrope.models import shipped
from longrope.models.loading import load_model
from longrope.models.shipped import SHIPPED_DIR, reference_logits, shipped_marker, shipped_tiny_path
from longrope.models.tiny import TinyConfig
from longrope.recipes import tiny as tiny_module
from longrope.recipes.cli import tiny_app
from longrope.recipes.tiny import ensure_tiny


@pytest.fixture(scope="module")
def loaded():
    return load_model("tiny")


def test_files_match_the_marker_and_fit_the_size_budget():
    path = shipped_tiny_path()
    marker = shipped_marker()
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(marker["sha256"])
    assert sum(f.stat().st_size for f in path.iterdir()) < 25e6
    assert marker["weights_dtype"] == "bfloat16" and marker["train_seconds"] > 0


def test_shipped_model_is_the_default_recipe():
    # A field added to TinyConfig after the build reads as what builds did before it (TinyConfig.from_json).
    assert TinyConfig.from_json(shipped_marker()["config"]) == TinyConfig.default()
    assert set(shipped_marker()["config"]) <= set(TinyConfig.default().to_json())


def test_logits_match_the_stored_ones(loaded):
    model, tokenizer = loaded
    expected = shipped_marker()["reference"]["logits"]
    torch.testing.assert_close(torch.tensor(reference_logits(model, tokenizer)), torch.tensor(expected),
                               atol=2e-3, rtol=0)


def test_retrieves_a_passkey_inside_its_window(loaded):
    from longrope.eval.passkey import passkey_trials

    model, tokenizer = loaded
    window = model.config.max_position_embeddings
    (trial,) = passkey_trials(model, tokenizer, [window], trials=1, template="code", progress=False)
    assert trial.correct, trial.output


def test_loading_never_trains(monkeypatch):
    monkeypatch.setattr(tiny_module, "train_tiny", lambda *a, **k: pytest.fail("trained on load"))
    model, _ = load_model("tiny")
    assert model.config.max_position_embeddings == TinyConfig.default().window


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    copy = tmp_path / "tiny-stdlib"
    shutil.copytree(SHIPPED_DIR, copy)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", copy)
    return copy


def test_damaged_weights_are_refused_with_what_to_do(shipped_copy):
    weights = shipped_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(LongRopeError, match="damaged.*reinstall.*longrope tiny train"):
        load_model("tiny")


def test_missing_file_is_refused(shipped_copy):
    (shipped_copy / "tokenizer.json").unlink()
    with pytest.raises(LongRopeError, match="tokenizer.json is missing"):
        load_model("tiny")


def test_a_rebuild_loads_by_name_and_a_damaged_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path))
    config = replace(TinyConfig.test(), name="tiny-rebuilt", train_steps=2, max_train_chars=150_000,
                     eval_windows=4, eval_long_docs=1)
    path = ensure_tiny(config)
    model, _ = load_model("tiny-rebuilt")
    assert model.config.vocab_size == config.vocab_size
    (path / "config.json").write_text((path / "config.json").read_text() + " ")
    with pytest.raises(LongRopeError, match="config.json is damaged.*longrope tiny train --force"):
        load_model("tiny-rebuilt")


def test_rebuild_into_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LONGROPE_CACHE", str(blocker / "cache"))
    result = CliRunner().invoke(tiny_app, ["train", "--test-size"])
    assert result.exit_code != 0
    assert "not writable" in str(result.exception) or "not writable" in result.output
