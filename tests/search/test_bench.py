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
