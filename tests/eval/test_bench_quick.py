"""The perplexity benchmark's --quick mode runs and finds ours and the naive loss in agreement."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_perplexity.py"


def test_bench_perplexity_quick():
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--threads", "1"], capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT OK" in proc.stdout and "matmul peak" in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines()
            if line.split()[:1] in (["bf16"], ["fp32"]) and line.split()[1].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("bf16", "128"), ("bf16", "512"), ("fp32", "128"), ("fp32", "512")]
