"""Real processes stopped at random points: Ctrl-C says what was kept and how to continue, the printed command
finishes the job, a second writer on the same --out is refused, and a SIGKILL's lock is taken over."""

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


def _longrope(args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "longrope", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


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
