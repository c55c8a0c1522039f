"""Smoke tests of the benchmark scripts' ``--quick`` modes (random tiny models, seconds each).

bench_perplexity and bench_search have their own quick tests in tests/eval and tests/search.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@functools.cache  # each script runs once per session; the tests read its output
def run_quick(script: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", *extra], capture_output=True,
                          text=True, env=env, timeout=300, cwd=BENCHMARKS.parent)


def _explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("script", ["bench_forward.py", "bench_scaling.py"])
def test_quick_mode_exits_zero_with_a_result_line(script):
    proc = run_quick(script)
    assert proc.returncode == 0, _explain(proc)
    assert re.search(r"^RESULT ", proc.stdout, re.MULTILINE), _explain(proc)
    assert "machine:" in proc.stdout


def test_forward_quick_result_is_a_percentage_of_peak():
    proc = run_quick("bench_forward.py")
    match = re.search(r"^RESULT best efficiency ([0-9.]+)% of (?:bf16|fp32) peak", proc.stdout, re.MULTILINE)
    assert match, _explain(proc)
    assert 0 < float(match.group(1)) < 200


def test_forward_ablation_checks_the_nll_is_unchanged_and_prints_a_ratio():
    proc = run_quick("bench_forward.py", "--ablation")
    match = re.search(r"ratio ([0-9.]+); same NLL bit for bit: True", proc.stdout)
    assert proc.returncode == 0 and match, _explain(proc)
    assert float(match.group(1)) > 0


def test_scaling_quick_prints_a_finite_exponent():
    proc = run_quick("bench_scaling.py")
    match = re.search(r"^RESULT exponent (-?[0-9.]+); ([0-9.]+) s per fitness", proc.stdout, re.MULTILINE)
    assert match, _explain(proc)
    assert "SANITY FAIL" not in proc.stdout
    # between "constant" and "worse than cubic" on any machine, however loaded
    assert 0 < float(match.group(1)) < 3
    assert float(match.group(2)) > 0


def test_scaling_fit_recovers_a_known_exponent():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_scaling import fit_exponent
    finally:
        sys.path.remove(str(BENCHMARKS))
    lengths = [256, 512, 1024, 2048]
    assert fit_exponent(lengths, [3e-6 * n**1.5 for n in lengths]) == pytest.approx(1.5)
    assert fit_exponent(lengths, [0.1 * n for n in lengths]) == pytest.approx(1.0)
