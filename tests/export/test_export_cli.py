"""`longrope export` / `longrope convert` through the real entry point (errors become one line, exit code 2)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from export_helpers import LONG, SHORT, WINDOW, tiny_with_tokenizer

from longrope.cli import main
from longrope.export import read_gguf
from longrope.rope import LongRopeSpec, YarnSpec, save_spec


def run(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["longrope", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code or 0


@pytest.fixture(scope="module")
def phi3_dir(tmp_path_factory, bpe_tokenizer):
    path = tmp_path_factory.mktemp("cli") / "phi3"
    tiny_with_tokenizer("phi3", bpe_tokenizer).save_pretrained(path)
    bpe_tokenizer.save_pretrained(path)
    return path


def test_export_with_gguf_then_convert(tmp_path, monkeypatch, capsys, phi3_dir):
    spec = save_spec(LongRopeSpec(long_factor=LONG, short_factor=SHORT, factor=4.0), tmp_path / "spec.json")
    out = tmp_path / "out"
    assert run(monkeypatch, "export", str(phi3_dir), "--spec", str(spec), "--out", str(out), "--gguf") == 0
    assert "wrote" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "longrope" and config["max_position_embeddings"] == 4 * WINDOW
    meta, tensors = read_gguf(out / "model.gguf")
    assert meta["general.architecture"] == "phi3"
    np.testing.assert_array_equal(tensors["rope_factors_short.weight"], np.asarray(SHORT, np.float32))

    back = tmp_path / "back"
    assert run(monkeypatch, "convert", str(out / "model.gguf"), str(back)) == 0
    params = json.loads((back / "config.json").read_text())["rope_parameters"]
    assert params["rope_type"] == "longrope"
    np.testing.assert_allclose(params["long_factor"], LONG, rtol=1e-6)
    assert (back / "tokenizer.json").is_file()


def test_errors_are_one_line(tmp_path, monkeypatch, capsys, phi3_dir):
    spec = save_spec(YarnSpec(factor=2.0), tmp_path / "spec.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    assert run(monkeypatch, "export", str(phi3_dir), "--spec", str(spec), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert "not empty" in " ".join(err.split())  # rich may wrap the line at the terminal width
    assert run(monkeypatch, "convert", str(tmp_path / "missing.gguf"), str(tmp_path / "o")) == 2
    assert "does not exist" in " ".join(capsys.readouterr().err.split())
