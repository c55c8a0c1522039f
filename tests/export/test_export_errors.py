"""Bad input and lossy exports: clear LongRopeErrors, nothing half-written, losses listed."""

from __future__ import annotations

import json
import warnings

import pytest
from export_helpers import LONG, SHORT
from factories import tiny_model

from longrope.attention.patch import apply
from longrope.errors import LongRopeError
from longrope.export import LossyExportWarning, export_hf
from longrope.export import hf as hf_module
from longrope.rope import DynamicNTKSpec, LinearSpec, LongRopeSpec, StringSpec, YarnSpec

LONGROPE = LongRopeSpec(long_factor=LONG, short_factor=SHORT, factor=4.0)


def _entries(path):
    return sorted(p.name for p in path.iterdir())


def test_non_empty_directory_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    model = tiny_model("llama")
    with pytest.raises(LongRopeError, match="not empty.*--force"):
        export_hf(model, None, LONGROPE, out)
    assert _entries(out) == ["keep.txt"]
    export_hf(model, None, LONGROPE, out, force=True)
    assert "keep.txt" not in _entries(out) and "config.json" in _entries(out)
    assert _entries(tmp_path) == ["out"]  # no staging or old copies left


def test_empty_existing_directory_is_fine(tmp_path):
    (tmp_path / "out").mkdir()
    export_hf(tiny_model("llama"), None, LinearSpec(factor=2.0), tmp_path / "out")
    assert (tmp_path / "out" / "config.json").is_file()


def test_factor_count_must_match_the_model(tmp_path):
    with pytest.raises(LongRopeError, match="4 rescale factors.*8 rotary pairs"):
        export_hf(tiny_model("llama"), None, LongRopeSpec(long_factor=[1.0, 2.0, 3.0, 4.0], factor=2.0),
                  tmp_path / "out")
    assert _entries(tmp_path) == []


def test_failed_export_leaves_no_directory(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hf_module, "save_weights", boom)
    with pytest.raises(OSError, match="disk full"):
        export_hf(tiny_model("llama"), None, LONGROPE, tmp_path / "out")
    assert _entries(tmp_path) == []


def test_failed_forced_export_keeps_the_old_directory(tmp_path, monkeypatch):
    out = export_hf(tiny_model("llama"), None, LinearSpec(factor=2.0), tmp_path / "out")
    before = (out / "config.json").read_text()
    monkeypatch.setattr(hf_module, "save_weights", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        export_hf(tiny_model("llama"), None, LONGROPE, out, force=True)
    assert (out / "config.json").read_text() == before
    assert _entries(tmp_path) == ["out"]


def test_ctrl_c_in_the_gguf_step_keeps_the_previous_export_whole(tmp_path):
    """The GGUF is written inside the staging directory: the old export (with its model.gguf) stays as it was."""
    out = export_hf(tiny_model("llama"), None, LinearSpec(factor=2.0), tmp_path / "out",
                    also=lambda d: (d / "model.gguf").write_text("old gguf"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(directory):
        (directory / "model.gguf").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_hf(tiny_model("llama"), None, LONGROPE, out, force=True, also=interrupted)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _entries(tmp_path) == ["out"]


def test_n_hat_is_refused_unless_lossy(tmp_path):
    spec = LongRopeSpec(long_factor=LONG, short_factor=SHORT, factor=4.0, n_hat=4)
    model = apply(tiny_model("llama"), spec)
    with pytest.raises(LongRopeError, match="n_hat=4.*lossy"):
        export_hf(model, None, spec, tmp_path / "out")
    assert _entries(tmp_path) == []
    with pytest.warns(LossyExportWarning, match="n_hat=4"):
        out = export_hf(model, None, spec, tmp_path / "out", lossy=True)
    report = json.loads((out / "longrope_export.json").read_text())
    assert len(report["lost"]) == 1 and "n_hat=4" in report["lost"][0]
    assert report["exported"]["n_hat"] == 0 and report["spec"]["n_hat"] == 4
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"]["long_factor"] == LONG


def test_string_is_refused_unless_lossy(tmp_path):
    spec = StringSpec(shift=40, local_window=8, base=YarnSpec(factor=2.0), attention_factor=1.1)
    model = tiny_model("llama")
    with pytest.raises(LongRopeError, match="STRING.*lossy"):
        export_hf(model, None, spec, tmp_path / "out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export_hf(model, None, spec, tmp_path / "out", lossy=True)
    assert any("STRING" in str(w.message) for w in caught)
    params = json.loads((out / "config.json").read_text())["rope_parameters"]
    assert params["rope_type"] == "yarn"
    # STRING's attention factor is folded into YaRN's: 1.1 * (0.1 ln 2 + 1)
    assert params["attention_factor"] == pytest.approx(1.1 * (0.1 * 0.6931471805599453 + 1))


def test_phi3_refuses_dynamic_ntk(tmp_path):
    with pytest.raises(LongRopeError, match="phi3.*default / longrope"):
        export_hf(tiny_model("phi3"), None, DynamicNTKSpec(factor=2.0), tmp_path / "out")
    assert _entries(tmp_path) == []


def test_needs_a_spec(tmp_path):
    with pytest.raises(LongRopeError, match="no spec"):
        export_hf(tiny_model("llama"), None, None, tmp_path / "out")


def test_window_is_validated(tmp_path):
    with pytest.raises(LongRopeError, match="positive"):
        export_hf(tiny_model("llama"), None, LONGROPE, tmp_path / "out", target_window=0)
