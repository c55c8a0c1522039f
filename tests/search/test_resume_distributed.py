"""Kill a search with SIGKILL and resume it; spread one over 2 torchrun ranks: same result as one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from search_helpers import small_config, small_data, small_model

from longrope.search import search
from longrope.search.state import STATE_FILE

WORKER = Path(__file__).with_name("search_worker.py")
GENERATIONS = 8


def _env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    return search(
        small_model(), None, small_config(generations=GENERATIONS), out, data=small_data(), progress=False
    )


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_sigkill_then_resume(tmp_path, uninterrupted):
    log = tmp_path / "evaluations.jsonl"
    cmd = [sys.executable, str(WORKER), str(tmp_path), "--generations", str(GENERATIONS), "--delay", "0.05"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _lines(log) < 20 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the worker finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _lines(log)
    assert 20 <= killed_at < uninterrupted.evaluations
    state = json.loads((tmp_path / STATE_FILE).read_text())  # never half-written
    assert len(state["records"]) <= killed_at

    resumed = search(
        small_model(),
        None,
        small_config(generations=GENERATIONS),
        tmp_path,
        data=small_data(),
        progress=False,
        resume=True,
    )
    assert resumed.genome == uninterrupted.genome
    assert resumed.fitness == pytest.approx(uninterrupted.fitness, abs=1e-6)
    assert resumed.evaluations == uninterrupted.evaluations
    assert [h["best"] for h in resumed.history] == pytest.approx([h["best"] for h in uninterrupted.history])
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["order"] for r in rows] == list(
        range(uninterrupted.evaluations)
    )  # nothing redone, nothing lost


def _torchrun(args, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", str(WORKER), str(tmp_path), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def test_two_ranks_match_one_and_refuse_to_disagree(tmp_path, uninterrupted):
    done = _torchrun(["--generations", str(GENERATIONS), "--check-disagreement"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        assert (
            f"disagreement error on rank {rank}: the ranks disagree on the search configuration"
            in done.stderr
        )
    assert not (tmp_path / "disagree" / STATE_FILE).exists()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["genome"] == uninterrupted.genome.key
    assert result["fitness"] == pytest.approx(uninterrupted.fitness, abs=1e-6)
    assert result["evaluations"] == uninterrupted.evaluations
    assert result["forward_tokens"] == uninterrupted.forward_tokens


def test_two_ranks_run_a_two_objective_search_as_one(tmp_path):
    """Candidates and baselines dealt over 2 ranks: the same front, pick and baselines as one process."""
    from search_helpers import small_needle_data

    one = search(small_model(), None, small_config(objective="ppl+needle", generations=2), tmp_path / "one",
                 data=small_needle_data(), progress=False)
    done = _torchrun(["--generations", "2", "--two"], tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["genome"] == one.genome.key and result["evaluations"] == one.evaluations
    assert result["fitness"] == pytest.approx(one.fitness, abs=1e-6)
    assert result["needle"] == pytest.approx(one.needle, abs=1e-6)
    expected = [[m["fitness"], m["needle"]] for m in one.front]
    assert len(result["front"]) == len(expected)
    for got, want in zip(result["front"], expected):
        assert got == pytest.approx(want, abs=1e-6)
    assert result["baselines"] == {n: pytest.approx(list(v), abs=1e-6) for n, v in one.baselines.items()}
    assert (tmp_path / "two" / "front.json").exists()


@pytest.mark.parametrize("damage", ["truncate", "delete", "garble"])
def test_resume_repairs_a_damaged_log_from_the_state(tmp_path, damage, capsys):
    """A log cut short, deleted or garbled after the state was saved is rebuilt, with a note, before resuming."""
    config = small_config(generations=2)
    search(small_model(), None, config, tmp_path, data=small_data(), progress=False)
    log = tmp_path / "evaluations.jsonl"
    rows = log.read_text().splitlines()
    if damage == "truncate":
        log.write_text("\n".join(rows[: len(rows) // 2]) + "\n")
    elif damage == "delete":
        log.unlink()
    else:
        log.write_text("\n".join(rows[:3] + ["{not json"] + rows[4:]) + "\n")
    longer = small_config(generations=4)  # same search, more generations: the resume must continue it
    resumed = search(small_model(), None, longer, tmp_path, data=small_data(), progress=False, resume=True)
    assert "rebuilt its" in capsys.readouterr().err
    repaired = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["order"] for r in repaired] == list(range(resumed.evaluations))
    assert all(r.get("rebuilt") for r in repaired[: len(rows)])
    assert not any(r.get("rebuilt") for r in repaired[len(rows):])
