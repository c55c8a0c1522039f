"""`longrope eval ...`: commands write their reports; user errors are LongRopeError (one line, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from longrope.cli import app
from longrope.errors import LongRopeError
from longrope.eval.cli import build_spec, default_factor, parse_lengths
from longrope.rope import StringSpec
from longrope.rope import load_spec as spec_of

runner = CliRunner()


def test_parse_lengths_and_factor():
    assert parse_lengths(None, 256) == [256, 512, 1024, 2048]
    assert parse_lengths("1x, 2x,300", 256) == [256, 300, 512]
    assert default_factor([256, 300], 256) == 2.0
    for bad in ("0", "-3", "abc", "1.5", ","):
        with pytest.raises(LongRopeError):
            parse_lengths(bad, 256)


def test_build_spec(tmp_path):
    assert build_spec("yarn", 4.0, 256)[1].factor == 4.0
    assert build_spec("none", 4.0, 256)[0] == "none"
    name, spec = build_spec("string", 4.0, 256)
    shift, local = spec.resolved(256)
    assert name == "string" and (shift, local) == (84, 42)
    path = tmp_path / "searched.json"
    path.write_text(json.dumps({"method": "pi", "factor": 3.0}))
    assert build_spec(str(path), 4.0, 256) == ("searched", build_spec("pi", 3.0, 256)[1])
    with pytest.raises(LongRopeError, match="unknown scaling method"):
        build_spec("bogus", 2.0, 256)
    name, spec = build_spec("string+yarn", 4.0, 256)  # STRING over another method: S from the base's window
    assert name == "string+yarn" and spec.base == build_spec("yarn", 4.0, 256)[1]
    assert spec.resolved(256) == (int(0.33 * 1024), 128)
    assert build_spec("string+" + str(path), 4.0, 256) == ("string+searched", StringSpec(base=spec_of(path)))
    for bad in ("string+string", "string+bogus", "string+"):
        with pytest.raises(LongRopeError):
            build_spec(bad, 2.0, 256)
    with pytest.raises(LongRopeError, match="does not exist"):
        build_spec(str(tmp_path / "missing.json"), 2.0, 256)


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-docs")
    for i in range(3):
        (root / f"m{i}.py").write_text("".join(f"def f_{j}(x):\n    return x + {i * j}\n" for j in range(80)))
    return root


def test_ppl_command_writes_reports(tiny_loaded, tiny_model_dir, docs, tmp_path):
    out = tmp_path / "ppl"
    result = runner.invoke(app, ["eval", "ppl", "--model", str(tiny_model_dir), "--method", "none", "--method", "pi",
                                 "--method", "string+pi", "--lengths", "1x,2x", "--corpus", str(docs), "--n-docs", "2",
                                 "--dtype", "fp32", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "ppl.json").read_text())
    assert data["settings"]["factor"] == 2.0 and set(data["ppl"]) == {"none", "pi", "string+pi"}
    assert (out / "ppl.png").exists() and (out / "ppl.md").exists()
    assert "method" in result.output


def test_passkey_needle_ruler_commands(tiny_loaded, tiny_model_dir, tmp_path):
    common = ["--model", str(tiny_model_dir), "--method", "none", "--lengths", "300", "--dtype", "fp32", "--quiet"]
    for command, extra, files in [
        ("passkey", ["--trials", "2", "--template", "code"], ["passkey.json", "passkey.md"]),
        ("needle", ["--depths", "2", "--trials", "1", "--template", "code"], ["needle.json", "needle-none.png"]),
        ("ruler", ["--tasks", "single,multikey", "--samples", "1", "--style", "code"], ["ruler.json", "ruler.md"]),
    ]:
        out = tmp_path / command
        result = runner.invoke(app, ["eval", command, *common, *extra, "--out", str(out)])
        assert result.exit_code == 0, (command, result.output, result.exception)
        assert all((out / f).exists() for f in files), command


def test_user_errors_are_longrope_errors(tiny_model_dir, tmp_path):
    for args in (["--lengths", "0"], ["--method", "bogus"], ["--mode", "sideways"],
                 ["--method", "string+smollm2-16k"]):  # a preset of another model, under STRING too
        result = runner.invoke(app, ["eval", "ppl", "--model", str(tiny_model_dir), "--out", str(tmp_path), *args])
        assert isinstance(result.exception, LongRopeError), (args, result.output)


def test_console_prints_one_line_and_exits_2(tiny_model_dir):
    proc = subprocess.run([sys.executable, "-m", "longrope", "eval", "ppl", "--model", str(tiny_model_dir),
                           "--lengths", "-4"], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr
