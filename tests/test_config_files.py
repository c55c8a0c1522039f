"""``--config FILE`` of `longrope search` and `longrope finetune`: the file sets the config's fields, options given
on the command line win, and a bad file is one clear error before any work."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from longrope.cli import app
from longrope.config_files import read_config_file
from longrope.errors import LongRopeError
from longrope.rope import LinearSpec, save_spec
from longrope.search.evolution import SearchConfig
from longrope.train.config import FinetuneConfig


@pytest.fixture
def captured(monkeypatch):
    """The config each command would run with; nothing loads or trains."""
    from longrope.search import cli as search_cli
    from longrope.train import finetuning

    seen = {}

    def fake_finetune(model, tokenizer, spec, config, out, resume=False, progress=True):
        seen["config"] = config
        return out / "model"

    def fake_search(model, long_spec, spec, config, out, resume, progress, device):
        seen["config"] = config

    monkeypatch.setattr(finetuning, "finetune", fake_finetune)
    monkeypatch.setattr("longrope.models.loading.load_model", lambda name, dtype="float32", device="cpu": (None, None))
    monkeypatch.setattr(search_cli, "_run_search", fake_search)
    return seen


def test_finetune_reads_the_file_and_options_win(tmp_path, captured):
    spec = tmp_path / "spec.json"
    save_spec(LinearSpec(factor=4.0), spec)
    (tmp_path / "ft.toml").write_text("length = 1024\nsteps = 160\nbatch_size = 4\nlr = 5e-4\nwarmup_steps = 10\n"
                                      "weight_decay = 0.1\n")
    base = ["finetune", "--spec", str(spec), "--out", str(tmp_path / "o"), "--no-progress",
            "--config", str(tmp_path / "ft.toml")]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 0, result.output
    assert captured["config"] == FinetuneConfig(length=1024, steps=160, batch_size=4, lr=5e-4, warmup_steps=10,
                                                weight_decay=0.1)  # weight_decay: a field with no option
    result = CliRunner().invoke(app, base + ["--steps", "20", "--batch", "2"])  # an alias counts as given
    assert result.exit_code == 0, result.output
    assert (captured["config"].steps, captured["config"].batch_size, captured["config"].length) == (20, 2, 1024)

    (tmp_path / "ft.toml").write_text("batch_size = 4\n")
    result = CliRunner().invoke(app, base)
    assert isinstance(result.exception, LongRopeError) and "give --length and --steps" in str(result.exception)


def test_search_reads_a_json_file(tmp_path, captured):
    (tmp_path / "s.json").write_text(json.dumps({"factor": 8, "population": 12, "parents": 3, "mutation_prob": 0.5,
                                                 "search_attention": True, "racing_z": None}))
    args = ["search", "--out", str(tmp_path / "o"), "--no-progress", "--config", str(tmp_path / "s.json")]
    result = CliRunner().invoke(app, args + ["--population", "6"])
    assert result.exit_code == 0, result.output
    config = captured["config"]
    assert (config.factor, config.population, config.mutation_prob, config.search_attention, config.racing_z) == (
        8, 6, 0.5, True, None)
    assert config.generations == SearchConfig.generations  # neither given nor in the file: the default


@pytest.mark.parametrize("text, suffix, message", [
    ("populaton = 3\n", ".toml", "unknown setting(s) populaton"),
    ("factor = \n", ".toml", "is not valid TOML"),
    ("[1, 2]", ".json", "must be a table"),
    ("{", ".json", "is not valid JSON"),
    ('population = "10"\n', ".toml", "population is '10' (a string); expected an integer"),
    ('{"generations": 2.5}', ".json", "generations is 2.5 (a number); expected an integer"),
    ('{"racing": "false"}', ".json", "racing is 'false' (a string); expected true or false"),
])
def test_bad_files_are_one_clear_error(tmp_path, text, suffix, message):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(LongRopeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_config_file(path, SearchConfig)
    with pytest.raises(LongRopeError, match="does not exist"):
        read_config_file(tmp_path / "missing.toml", SearchConfig)


def test_a_value_of_the_wrong_type_in_the_file_stops_the_command_before_any_work(tmp_path, captured):
    (tmp_path / "s.toml").write_text('factor = 8\npopulation = "10"\n')
    result = CliRunner().invoke(app, ["search", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "s.toml")])
    assert isinstance(result.exception, LongRopeError)
    assert str(result.exception) == (f"--config: {tmp_path / 's.toml'}: population is '10' (a string); "
                                     "expected an integer")
    assert "config" not in captured and not (tmp_path / "o").exists()


def test_a_bad_value_in_the_file_is_refused_like_an_option(tmp_path, captured):
    (tmp_path / "s.toml").write_text("factor = 8\npopulation = -3\n")
    result = CliRunner().invoke(app, ["search", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "s.toml")])
    assert isinstance(result.exception, LongRopeError) and "population must be >= 1" in str(result.exception)
    assert "config" not in captured
