"""Real processes stopped at random points: Ctrl-C (and SIGTERM, alike) says what was kept and how to continue,
the printed command finishes the job, a second writer on the same --out is refused, and a SIGKILL's lock is taken
over."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SEARCH = ["search", "--model", "tiny", "--factor", "2", "--population", "8", "--parents", "4", "--mutations", "4",
          "--crossovers", "4", "--generations", "3", "--docs", "2", "--batch", "1", "--no-progress"]


@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "OMP_NUM_THREADS": "1", "LONGROPE_CACHE": str(tmp_path / "cache"), "COLUMNS": "400"}


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt: give
    # the child the default disposition, as a terminal's Ctrl-C finds it, however pytest itself was started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _longrope(args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "longrope", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint, **kwargs)


def _wait_for_lines(path: Path, count: int, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines (exit {proc.poll()}): {proc.stderr.read()[-2000:]}")


def _orders(log: Path) -> list[int]:
    return [json.loads(line)["order"] for line in log.read_text().splitlines()]


def test_ctrl_c_prints_the_resume_command_and_it_finishes_the_search(tmp_path, env):
    out = tmp_path / "search"
    proc = _longrope([*SEARCH, "--out", out], env)
    _wait_for_lines(out / "evaluations.jsonl", 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    message = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(message) == 1 and "Traceback" not in err
    assert str(out / "search_state.json") in message[0]
    command = shlex.split(message[0].split("continue with: ")[1])
    assert command[0] == "longrope" and command[-1] == "--resume"
    assert not (tmp_path / ".search.lock").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    resumed = _longrope(command[1:], env)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    orders = _orders(out / "evaluations.jsonl")
    assert orders == list(range(len(orders))) and json.loads((out / "result.json").read_text())


def test_a_second_search_on_the_same_out_is_refused_and_a_killed_ones_lock_is_taken_over(tmp_path, env):
    out = tmp_path / "search"
    first = _longrope([*SEARCH, "--out", out], env)
    _wait_for_lines(out / "evaluations.jsonl", 1, first)
    second = _longrope([*SEARCH, "--out", out, "--resume"], env)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2
    assert f"is in use by process {first.pid}" in err and "Traceback" not in err

    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (tmp_path / ".search.lock").exists()  # SIGKILL leaves it behind ...
    third = _longrope([*SEARCH, "--out", out, "--resume"], env)
    _, err = third.communicate(timeout=300)
    assert third.returncode == 0, err  # ... and the next run takes it over
    orders = _orders(out / "evaluations.jsonl")
    assert orders == list(range(len(orders)))


def test_ctrl_c_during_eval_writes_the_finished_methods(tmp_path, env):
    out = tmp_path / "ppl"
    proc = _longrope(["eval", "ppl", "--model", "tiny", "--method", "none", "--method", "yarn", "--method", "pi",
                      "--lengths", "1x,8x", "--n-docs", "6", "--out", out], env)
    deadline = time.time() + 120  # progress lines go to stderr (not a terminal): wait for the second method
    lines: list[str] = []
    os.set_blocking(proc.stderr.fileno(), False)
    while time.time() < deadline and not any("ppl yarn" in line for line in lines):
        chunk = proc.stderr.readline()
        if chunk:
            lines.append(chunk)
        else:
            time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + err
    assert "interrupted: eval ppl stopped" in err and "Traceback" not in err
    report = json.loads((out / "ppl.json").read_text())
    assert report["settings"]["interrupted"] is True
    assert list(report["ppl"]) == ["none"] and set(report["ppl"]["none"]) == {"256", "2048"}


EXPORT_FILES = {"config.json", "generation_config.json", "longrope_export.json", "longrope_spec.json", "model.gguf",
                "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture()
def yarn_spec(tmp_path):
    from longrope.rope import YarnSpec, save_spec

    return save_spec(YarnSpec(factor=2.0), tmp_path / "yarn.json")


def test_an_export_killed_at_any_point_leaves_a_whole_export_and_the_next_run_cleans_up(tmp_path, env, yarn_spec):
    out = tmp_path / "export"
    export = ["export", "tiny", "--spec", yarn_spec, "--gguf", "--out", out]
    for _ in range(2):  # the first run fills the cache; time the second, as warm as the runs stopped below
        started = time.time()
        first = _longrope([*export, "--force"], env)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
        seconds = time.time() - started
    assert set(p.name for p in out.iterdir()) == EXPORT_FILES

    # Stop a --force re-export late in its run (staging, GGUF, publishing) with Ctrl-C and with SIGKILL. On busy
    # cores a run can finish before the signal: then try again earlier, so that every signal lands mid-run.
    for stop in [signal.SIGINT, signal.SIGKILL, signal.SIGINT, signal.SIGKILL]:
        fraction = 0.9
        for _ in range(6):
            proc = _longrope([*export, "--force"], env)
            time.sleep(seconds * fraction)
            proc.send_signal(stop)
            _, err = proc.communicate(timeout=120)
            assert "Traceback" not in err, err
            assert set(p.name for p in out.iterdir()) == EXPORT_FILES, (stop, fraction, err)  # old or new, but whole
            if proc.returncode in (130, -signal.SIGKILL):
                break
            assert proc.returncode in (0, -signal.SIGINT), err  # done, or Ctrl-C in the interpreter's shutdown
            fraction *= 0.7
        assert proc.returncode in (130, -signal.SIGKILL), (stop, err)  # the signal came before the end
        if stop == signal.SIGINT:
            assert "interrupted" in err and not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    again = _longrope([*export, "--force"], env)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert set(p.name for p in out.iterdir()) == EXPORT_FILES
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert hidden == [], hidden  # a killed run's staging directory, old copy and lock are swept


def test_ctrl_c_during_finetune_names_the_resume_command_and_it_finishes(tmp_path, env, yarn_spec):
    out = tmp_path / "finetune"
    proc = _longrope(["finetune", "--spec", yarn_spec, "--length", "64", "--steps", "40", "--save-every", "5",
                      "--batch", "1", "--no-progress", "--out", out], env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(out.glob("checkpoints/*/trainer_state.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    message = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(message) == 1 and "Traceback" not in err, err
    assert not (out / "model").exists() and not (tmp_path / ".finetune.lock").exists()
    command = shlex.split(message[0].split("continue with: ")[1])
    assert command[0] == "longrope" and command[-1] == "--resume"
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints and all(p.startswith("step-") for p in checkpoints)

    resumed = _longrope(command[1:], env)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    trained = json.loads((out / "model" / "longrope_finetune.json").read_text())
    assert (out / "model" / "model.safetensors").exists()
    assert trained["steps"] == 40 and trained["resumed_from_step"] == int(checkpoints[-1].removeprefix("step-"))


SMALL_PLAN = """
[model]
name = "tiny"
[[stages]]
kind = "search"
factor = 2
population = 8
parents = 4
mutations = 4
crossovers = 4
generations = 3
docs = 2
batch = 1
[[stages]]
kind = "export"
"""


def test_ctrl_c_during_extend_keeps_the_stage_and_the_printed_command_finishes_the_plan(tmp_path, env):
    plan, out = tmp_path / "plan.toml", tmp_path / "extend"
    plan.write_text(SMALL_PLAN)
    proc = _longrope(["extend", plan, "--no-progress", "--out", out], env)
    _wait_for_lines(out / "01-search" / "evaluations.jsonl", 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    message = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(message) == 1 and "Traceback" not in err, err
    assert not (out / "01-search" / "DONE").exists() and not (tmp_path / ".extend.lock").exists()
    log = out / "01-search" / "evaluations.jsonl"
    before, inode = log.read_text(), log.stat().st_ino

    command = shlex.split(message[0].split("continue with: ")[1])
    resumed = _longrope(command[1:], env)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    orders = _orders(log)
    assert orders == list(range(len(orders)))
    assert log.read_text().startswith(before) and log.stat().st_ino == inode  # continued, not restarted
    assert (out / "01-search" / "DONE").exists() and (out / "02-export" / "DONE").exists()


def test_a_ctrl_c_inside_interrupts_deferred_waits_for_the_block_to_finish():
    from longrope.interrupts import interrupts_deferred

    # Python's own Ctrl-C handler, as a terminal's process has it (a shell's background job ignores SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    steps = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal is delivered here, and held
                steps.append("second write")
        assert steps == ["second write"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with interrupts_deferred():  # nothing pending: the block ends normally
            steps.append("again")
        assert steps == ["second write", "again"]
    finally:
        signal.signal(signal.SIGINT, previous)


# A command that says "ready" on stdout and then waits inside on_interrupt, for the signal tests below.
WAITING_COMMAND = """
import sys, time
from longrope import cli
from longrope.interrupts import on_interrupt

@cli.app.command("wait-for-a-signal")
def wait_for_a_signal() -> None:
    with on_interrupt("waiting stopped; saved: nothing [here]; continue with: longrope wait-for-a-signal"):
        print("ready", flush=True)
        time.sleep(120)

cli.main()
"""


@pytest.mark.parametrize("stop, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_stops_a_command_as_ctrl_c_does_with_status_143(env, stop, status):
    proc = subprocess.Popen([sys.executable, "-c", WAITING_COMMAND, "wait-for-a-signal"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert err.strip() == ("interrupted: waiting stopped; saved: nothing [here]; continue with: longrope "
                           "wait-for-a-signal"), err


def test_a_sigterm_inside_interrupts_deferred_waits_for_the_block_and_gives_143():
    from longrope.interrupts import interrupt_status, interrupts_deferred, sigterm_interrupts

    before = signal.getsignal(signal.SIGTERM)
    steps = []
    with sigterm_interrupts():
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # delivered here, and held
                steps.append("second write")
        assert steps == ["second write"] and interrupt_status() == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_during_search_keeps_every_finished_evaluation(tmp_path, env):
    out = tmp_path / "search"
    proc = _longrope([*SEARCH, "--out", out], env)
    _wait_for_lines(out / "evaluations.jsonl", 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    message = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(message) == 1 and "Traceback" not in err, err
    assert str(out / "search_state.json") in message[0] and message[0].endswith("--resume")
    assert not (tmp_path / ".search.lock").exists()
    state = json.loads((out / "search_state.json").read_text())
    orders = _orders(out / "evaluations.jsonl")
    assert orders == list(range(len(state["records"])))  # the log and the state agree: nothing half-written
