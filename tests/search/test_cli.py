"""``longrope search`` on a local model directory (random weights, a small BPE tokenizer), and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from longrope.cli import app
from longrope.rope import LongRopeSpec, load_spec


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from longrope.data.corpus import StdlibCorpus
    from longrope.models.tiny import train_tokenizer

    path = tmp_path_factory.mktemp("model")
    texts = [d.text for _, d in zip(range(40), StdlibCorpus("train").documents())]
    tokenizer = train_tokenizer(texts, 300)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path_factory.getbasetemp() / "search-cli-cache"))


def _run(*args):
    return CliRunner().invoke(app, ["search", *map(str, args)])


def test_search_then_short(model_dir, tmp_path, cache):
    common = [
        "--model",
        model_dir,
        "--population",
        6,
        "--parents",
        3,
        "--mutations",
        2,
        "--crossovers",
        2,
        "--generations",
        1,
        "--docs",
        2,
        "--dtype",
        "fp32",
        "--no-progress",
    ]
    done = _run(*common, "--factor", 4, "--out", tmp_path / "long", "--attention")
    assert done.exit_code == 0, done.output
    spec = load_spec(tmp_path / "long" / "best_spec.json")
    assert isinstance(spec, LongRopeSpec) and spec.factor == 4 and spec.attention_factor is not None
    result = json.loads((tmp_path / "long" / "result.json").read_text())
    assert "validation" in result["data"]
    again = _run(*common, "--factor", 4, "--out", tmp_path / "long", "--attention", "--resume")
    assert again.exit_code == 0, again.output
    short = _run(
        *common, "--short", "--long-spec", tmp_path / "long" / "best_spec.json", "--out", tmp_path / "short"
    )
    assert short.exit_code == 0, short.output
    both = load_spec(tmp_path / "short" / "best_spec.json")
    assert both.long_factor == spec.long_factor and len(both.short_factor) == len(spec.long_factor)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--factor", 4, "--split", "test"], "test split"),
        (["--factor", 1], "above the model's original window"),
        (["--factor", 4, "--population", 0], "budget is zero"),
        (["--short"], "--long-spec"),
        ([], "--factor or --target-length"),
        (["--factor", 4, "--attention-factor", 1.3, "--attention"], "give one of them"),
    ],
)
def test_errors(model_dir, tmp_path, cache, args, message):
    done = _run("--model", model_dir, "--out", tmp_path, "--no-progress", *args)
    assert done.exit_code != 0
    assert isinstance(done.exception, Exception) and message in str(done.exception)


def test_two_objective_search_of_the_tiny_model_at_8x(tmp_path, held_out_dir, monkeypatch):
    """The demo's setting with a very small budget: the shipped tiny model at 8x (2048 tokens), LongRoPE2 with the
    critical pair searched, two objectives on needles planted in stdlib source files."""
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "two"
    done = _run("--model", "tiny", "--factor", 8, "--objective", "ppl+needle", "--needles-per-doc", 4,
                "--longrope2", "--search-critical", "--corpus", held_out_dir, "--population", 4, "--parents", 2,
                "--mutations", 2, "--crossovers", 1, "--generations", 1, "--docs", 1, "--batch", 4,
                "--dtype", "fp32", "--no-progress", "--out", out)
    assert done.exit_code == 0, done.output
    front = json.loads((out / "front.json").read_text())
    assert "2048 tokens" in front["data"] and "4 needles each" in front["data"]
    assert set(front["baselines"]) == {"none", "pi", "ntk", "dynamic_ntk", "yarn"}
    chosen = front["chosen"]
    assert chosen["genome"]["critical"] in (3, 4, 5, 6, 7)  # the tiny model's candidates (head dim 32, L = 256)
    spec = load_spec(out / "best_spec.json")
    assert spec.to_dict() == chosen["spec"] and spec.factor == 8
    assert (out / "front.png").stat().st_size > 1000
    assert "shipped" in done.output and "front.json" in done.output
    help_text = _run("--help").output
    assert "--objective" in help_text and "--search-critical" in help_text
