"""The tiny model: loads with stock transformers, beats a unigram model, trains only on the train split,
and a half-written cache directory is rebuilt rather than loaded."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from longrope.data.corpus import StdlibCorpus, stdlib_split_of
from longrope.data.retrieval import CURRICULUM_COMPOSED_NAMES, CURRICULUM_PAIRING
from longrope.errors import LongRopeError
from longrope.hardware import autocast_dtype
from longrope.models.tiny import (
    MARKER, TRAIN_DOCUMENTS, TinyConfig, is_complete, tiny_metrics, tiny_path, with_steps)
from longrope.recipes import tiny as tiny_module
from longrope.recipes.cli import tiny_app
from longrope.recipes.tiny import ensure_tiny, sequence_nll

# Smaller still than TinyConfig.test(): only the plumbing is under test here.
MINI = replace(
    TinyConfig.test(), name="mini", train_steps=3, max_train_chars=150_000, eval_windows=4, eval_long_docs=1
)


def test_saved_directory_loads_with_stock_transformers(tiny_model_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    config = TinyConfig.test()
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.max_position_embeddings == config.window
    assert model.config.rope_parameters["rope_type"] == "default"
    assert model.config.rope_parameters["rope_theta"] == config.rope_theta
    assert model.config.head_dim // 2 >= 16
    ids = tokenizer("def main():\n    return 0\n")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == model.config.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "def main():\n    return 0\n"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer))


def test_marker_records_metrics_and_model_beats_unigram(tiny_model_dir):
    assert is_complete(tiny_model_dir)
    marker = tiny_metrics(tiny_model_dir)
    assert marker["config"] == TinyConfig.test().to_json()
    metrics = marker["metrics"]
    assert metrics["ppl_in_window"] < metrics["ppl_unigram"]
    window = TinyConfig.test().window
    assert set(metrics["ppl_by_length_no_scaling"]) == {str(window * s) for s in (1, 2, 4, 8)}
    assert marker["parameters"] > 0 and marker["train_seconds"] > 0


def test_only_the_train_split_is_used_for_training(tiny_model_dir):
    ids = (tiny_model_dir / TRAIN_DOCUMENTS).read_text().split()
    assert ids and all(stdlib_split_of(doc_id) == "train" for doc_id in ids)


def test_trainer_never_opens_the_test_split(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path))
    opened = []
    original_init = StdlibCorpus.__init__

    def spy(self, split="train", root=None):
        opened.append(split)
        original_init(self, split, root)

    monkeypatch.setattr(StdlibCorpus, "__init__", spy)
    ensure_tiny(MINI)
    assert "train" in opened and "test" not in opened


def test_half_written_directory_is_rebuilt_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path))
    path = tiny_path(MINI)
    path.mkdir(parents=True)
    (path / "config.json").write_text("{ truncated")  # a save killed half-way: no marker
    abandoned = path.parent / f".{path.name}.tmp-999999999"  # build dir of a killed process
    abandoned.mkdir()
    assert not is_complete(path)
    with pytest.raises(LongRopeError, match="not a complete"):
        tiny_metrics(path)

    assert ensure_tiny(MINI) == path
    assert is_complete(path)
    assert json.loads((path / "config.json").read_text())["model_type"] == "llama"
    assert not list(path.parent.glob(".*tmp*")), "temporary build directories left behind"

    # Now complete: the next call reuses it without training.
    monkeypatch.setattr(tiny_module, "train_tiny", lambda *a, **k: pytest.fail("retrained a complete model"))
    assert ensure_tiny(MINI) == path


def test_marker_of_another_config_triggers_a_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path))
    path = tiny_path(MINI)
    path.mkdir(parents=True)
    (path / MARKER).write_text(json.dumps({"config": {"name": "mini", "seed": 99}}))
    calls = []
    monkeypatch.setattr(tiny_module, "train_tiny", lambda config, out, **_: calls.append(out) or out)
    ensure_tiny(MINI)
    assert calls == [path]


def test_marker_written_before_a_field_was_added_reads_as_what_that_build_did(tmp_path, monkeypatch):
    # A build made before `retrieval_composed_names` existed had no composed names; its marker lacks the field.
    # It is the same config as one asking for 0 composed names (reused), not as the default's 4000 (rebuilt).
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path))
    without = replace(MINI, retrieval_composed_names=0)
    path = tiny_path(without)
    path.mkdir(parents=True)
    old = without.to_json()
    del old["retrieval_composed_names"]
    (path / MARKER).write_text(json.dumps({"config": old}))
    monkeypatch.setattr(tiny_module, "train_tiny", lambda *a, **k: pytest.fail("rebuilt"))
    assert ensure_tiny(without) == path
    assert TinyConfig.from_json(old) != replace(without, retrieval_composed_names=MINI.retrieval_composed_names)
    assert TinyConfig.from_json({"name": "x", "no_such_field": 1}) is None
    assert TinyConfig.from_json(None) is None and TinyConfig.from_json({}) is None  # not the default config


def test_the_default_recipe_pretrains_with_the_fine_tuning_curriculum():
    config = TinyConfig.default()
    assert config.retrieval_pairing == CURRICULUM_PAIRING
    assert config.retrieval_composed_names == CURRICULUM_COMPOSED_NAMES
    assert config.retrieval_pairing == "mixed_keys" and config.name == "tiny-stdlib"


def test_info_on_a_rebuild_that_does_not_exist_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path))
    result = CliRunner().invoke(tiny_app, ["info", "--built"])  # not built in an empty cache
    assert isinstance(result.exception, LongRopeError) and "tiny-stdlib" in str(result.exception)
    assert "longrope tiny train" in str(result.exception)


def test_chunked_loss_matches_the_full_forward(tiny_model_dir):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(3, model.config.vocab_size, (50,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids[None]).logits[0, :-1].float()
    expected = torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none")
    got = sequence_nll(model, ids, chunk=7)
    assert got.shape == (49,)
    torch.testing.assert_close(got, expected, atol=0.05, rtol=0.02)


def test_with_steps_renames_the_cache_entry():
    config = with_steps(TinyConfig.default(), 50)
    assert config.train_steps == 50 and config.name != TinyConfig.default().name
    with pytest.raises(LongRopeError):
        with_steps(TinyConfig.default(), 0)


def test_cli_info(tiny_model_dir, tmp_path, monkeypatch):
    runner = CliRunner()
    monkeypatch.setenv("LONGROPE_CACHE", str(tiny_model_dir.parent.parent))
    result = runner.invoke(tiny_app, ["info", "--test-size"])
    assert result.exit_code == 0, result.output
    assert str(tiny_model_dir.name) in result.output and "unigram" in result.output

    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path))
    result = runner.invoke(tiny_app, ["info", "--test-size"])
    assert isinstance(result.exception, LongRopeError)


def test_a_killed_build_resumes_from_its_checkpoint_and_ends_where_an_unbroken_one_does(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    config = replace(MINI, train_steps=6, checkpoints=3)  # state saved after steps 2 and 4
    unbroken = tiny_module.train_tiny(config, tmp_path / "unbroken", progress=False)

    out = tmp_path / "broken"
    calls = {"n": 0}
    real_windows = tiny_module._random_windows

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_windows(*args, **kwargs)

    monkeypatch.setattr(tiny_module, "_random_windows", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        tiny_module.train_tiny(config, out, progress=False)
    assert not out.exists() and tiny_module.checkpoint_path(out).is_file()

    resumed_calls = []

    def counted(*args, **kwargs):
        resumed_calls.append(1)
        return real_windows(*args, **kwargs)

    monkeypatch.setattr(tiny_module, "_random_windows", counted)
    tiny_module.train_tiny(config, out, progress=False)
    assert not tiny_module.checkpoint_path(out).exists()
    # Steps 5 and 6 and the validation windows: the 4 steps before the checkpoint were not redone.
    assert len(resumed_calls) == 3
    expected, got = load_file(unbroken / "model.safetensors"), load_file(out / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0)


def test_the_build_runs_in_the_dtype_asked_for_and_records_it(tmp_path):
    """`tiny train --dtype fp32`: no autocast even where bf16 is fast; the marker says so and where it ran."""
    out = tiny_module.train_tiny(replace(MINI, train_steps=2, checkpoints=1), tmp_path / "fp32", progress=False,
                                 device="cpu", dtype="fp32")
    marker = tiny_metrics(out)
    assert marker["autocast"] == "none (fp32)" and marker["device"] == "cpu" and marker["torch"] == torch.__version__
    assert math.isfinite(marker["metrics"]["ppl_in_window"])


@pytest.mark.parametrize("dtype, expected", [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_the_body_dtype_is_the_one_asked_for(dtype, expected):
    """Checked without training: a bf16 build on a CPU without fast bf16 would take minutes (a warning says so)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert autocast_dtype(torch.device("cpu"), dtype) == expected
