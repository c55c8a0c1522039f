"""The search benchmark's quick mode runs (a random tiny model) and passes its sanity checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_search.py"


def test_bench_quick(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--threads", "1", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ratios ours/plain: forward tokens" in done.stdout and "SUMMARY over 1 seed(s)" in done.stdout
    assert len(list((tmp_path / "seed0").glob("ours-*/best_spec.json"))) == 1
    assert (tmp_path / "seed0" / "plain" / "convergence.png").exists()


def test_replay_of_a_plain_log_and_its_trajectory_floor(tmp_path):
    """`--replay` reads a plain run's log only; the floor counts breeders and the final best fully, others once."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_search", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [  # 2 parents; generation 0 breeds from orders 0 and 1; order 3 is the final best
        (0, 0, [0.9, 1.1]), (0, 1, [1.9, 2.1]), (0, 2, [2.9, 3.1]), (1, 3, [0.4, 0.6]), (1, 4, [3.9, 4.1])
    ]
    log = tmp_path / "evaluations.jsonl"
    log.write_text("".join(
        json.dumps({"generation": g, "order": o, "per_doc": d, "fitness": sum(d) / 2}) + "\n" for g, o, d in rows
    ))
    assert bench.trajectory_floor(log, parents=2) == (0.8, 3, 5)  # (3 x 2 + 2 x 1) / 10 scorings
    dropped, wrong, entered, total, share = bench.replay_wrong_drops(log, parents=2, rank=1, z=None)
    assert (dropped, wrong, entered, total) == (1, 0, 1, 2)  # the exact rule drops order 4 after 3.9 / 2 > 1.0
    assert share == 0.75
    done = subprocess.run([sys.executable, str(BENCH), "--replay", str(log), "--parents", "2", "--rank", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "trajectory floor" in done.stdout and "0.800 of the plain run's forward tokens" in done.stdout
