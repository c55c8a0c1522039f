"""`longrope.cli.main`, the one error boundary: every failure is one line on stderr and an exit status that says
whose fault it was (2 bad input, 1 the environment or a bug, whose traceback goes to a crash file); `--debug`
shows the traceback; `--version`; printed paths keep their brackets.

Commands run in-process. `longrope presets` fails on demand: its table function is replaced by one that raises.
"""

from __future__ import annotations

import errno
import io
import sys
import tempfile

import pytest
from rich.console import Console

from longrope import cli
from longrope.errors import EnvironmentFailure, LongRopeError
from longrope.failures import DEBUG_ENV
from longrope.presets import cli as presets_cli


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path / "cache"))
    # setenv first so that monkeypatch restores the variable's absence after the test: `--debug` sets it in
    # os.environ, and a leak would put tracebacks into every later test's subprocesses.
    monkeypatch.setenv(DEBUG_ENV, "")
    monkeypatch.delenv(DEBUG_ENV)


def run(*args: object, raises: BaseException | None = None) -> tuple[int, str]:
    """(exit status, what the error console printed) of ``longrope ARGS``; ``longrope presets`` raises ``raises``."""
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["longrope", *map(str, args)])
        patch.setattr(cli, "err_console", Console(file=stderr, width=10_000))
        if raises is not None:
            def fail():
                raise raises
            patch.setattr(presets_cli, "presets_table", fail)
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    return exit_info.value.code, stderr.getvalue()


def one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_an_unexpected_exception_is_one_line_and_its_traceback_is_saved(tmp_path):
    code, err = run("presets", raises=RuntimeError("boom [/] at\nline two"))
    line = one_line(err)
    assert code == 1
    assert line.startswith("internal error: RuntimeError: boom [/] at; line two; full traceback saved to ")
    assert line.endswith("; please report it")
    saved = line.split("full traceback saved to ")[1].split("; please report it")[0]
    assert saved.startswith(str(tmp_path / "cache" / "crash"))
    text = open(saved).read()
    assert "command: longrope presets" in text and "Traceback" in text and "RuntimeError: boom" in text
    assert "torch" in text and "transformers" in text


def test_the_traceback_goes_to_the_temporary_directory_when_the_cache_is_unwritable(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    code, err = run("presets", raises=KeyError("k"))
    assert code == 1
    assert f"full traceback saved to {tmp_path / 'tmp' / 'longrope-crash'}" in one_line(err)


@pytest.mark.parametrize("how", ["env", "option"])
def test_debug_shows_the_traceback(how, monkeypatch, capsys):
    if how == "env":
        monkeypatch.setenv(DEBUG_ENV, "1")
    code, err = run(*(["--debug"] if how == "option" else []), "presets", raises=RuntimeError("boom"))
    assert code == 1 and err.startswith("internal error: RuntimeError: boom")
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("exc, status, words", [
    (LongRopeError("bad --factor\nuse 2 or more"), 2, "error: bad --factor; use 2 or more"),
    (EnvironmentFailure("the GPU went away"), 1, "error: the GPU went away"),
    (OSError(errno.ENOSPC, "No space left on device", "/out/[b]x"), 1, "/out/[b]x: No space left on device; free"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/x"), 1, "the file system is read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), 1, "/root/x: Permission denied; check"),
    (MemoryError(), 1, "error: out of memory; use a smaller"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/x"), 2, "/no/x: No such file or directory"),
    (RecursionError("maximum recursion depth exceeded"), 2, "nested too deeply"),
])
def test_expected_failures_name_the_problem_with_their_status(exc, status, words):
    code, err = run("presets", raises=exc)
    assert code == status, err
    assert words in one_line(err)


def test_a_bad_input_of_a_real_command_is_one_line_that_keeps_the_brackets_of_a_path(tmp_path):
    out = tmp_path / "a[/]b[bold]c"  # a directory "a[" holding "]b[bold]c"
    out.parent.mkdir()
    out.write_text("keep")  # --out is a file: refused before any model is loaded
    code, err = run("search", "--model", "tiny", "--factor", "2", "--out", out)
    assert code == 2
    assert str(out) in one_line(err)


def test_version_names_longrope_torch_and_transformers(capsys):
    code, err = run("--version")
    out = capsys.readouterr().out
    assert code == 0 and err == ""
    assert out.startswith("longrope ") and "torch " in out and "transformers " in out
    assert len(out.strip().splitlines()) == 1


def test_ctrl_c_while_the_commands_load_ends_quietly_with_130(monkeypatch, capsys):
    """The entry point (`longrope`, `python -m longrope`) imports the commands inside its own guard: a Ctrl-C that
    lands in those imports (torch, transformers: seconds on busy cores) is status 130 and one line, no traceback."""
    from longrope import __main__ as entry

    class InterruptedImport:
        def find_spec(self, name, path=None, target=None):
            if name == "longrope.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "longrope.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as stopped:
        entry.run()
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
