"""The device-and-precision policy (`longrope.hardware`): resolution, refusals, the cached measurement, the
fitted demo budget, and results that do not depend on the dtype by accident."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

from longrope import hardware
from longrope.errors import LongRopeError
from longrope.hardware import CpuSpeeds


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path))
    hardware._cpu_speeds.cache_clear()
    yield tmp_path
    hardware._cpu_speeds.cache_clear()


def _speeds(monkeypatch, fp32: float, bf16: float) -> None:
    monkeypatch.setattr(hardware, "cpu_speeds", lambda: CpuSpeeds(fp32=fp32, bf16=bf16, threads=2))
    hardware._warned.clear()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu", ""])
def test_an_unknown_device_is_refused(device):
    with pytest.raises(LongRopeError, match="device"):
        hardware.resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_and_auto_falls_back():
    for device in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(LongRopeError, match="CUDA is not available"):
            hardware.resolve_device(device)
    assert hardware.resolve_device("auto").type in ("cpu", "mps")
    assert hardware.resolve_device("CPU") == torch.device("cpu")


def test_mps_without_mps_is_refused(monkeypatch):
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)
    with pytest.raises(LongRopeError, match="no usable MPS"):
        hardware.resolve_device("mps")


@pytest.mark.parametrize("dtype", ["bf17", "int8", "float64", "", "half precision"])
def test_an_unknown_dtype_is_refused(dtype):
    with pytest.raises(LongRopeError, match="dtype"):
        hardware.parse_dtype(dtype)


def test_auto_dtype_on_cpu_follows_the_measurement(monkeypatch):
    cpu = torch.device("cpu")
    _speeds(monkeypatch, fp32=40.0, bf16=0.7)  # AVX2 only: bf16 60x slower
    assert hardware.resolve_precision("cpu", "auto").dtype == torch.float32
    assert hardware.autocast_dtype(cpu) is None
    _speeds(monkeypatch, fp32=200.0, bf16=800.0)  # AVX-512-bf16
    assert hardware.resolve_precision("cpu", "auto").dtype == torch.bfloat16
    assert hardware.autocast_dtype(cpu) == torch.bfloat16
    _speeds(monkeypatch, fp32=200.0, bf16=250.0)  # faster, but not clearly: fp32
    assert hardware.resolve_precision("cpu", "auto").dtype == torch.float32



def test_fine_tuning_mixed_precision_follows_the_same_policy(monkeypatch):
    """The fine-tune's accelerate setting comes from `autocast_dtype`: auto only where fast, an explicit slow
    bf16 kept but warned about, "no" untouched."""
    from longrope.train.finetuning import _mixed_precision

    cpu = torch.device("cpu")
    _speeds(monkeypatch, fp32=42.0, bf16=0.7)
    assert _mixed_precision("auto", cpu) == "no"
    assert _mixed_precision("no", cpu) == "no"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _mixed_precision("bf16", cpu) == "bf16"
    assert any("60x slower" in str(w.message) for w in caught)
    _speeds(monkeypatch, fp32=200.0, bf16=800.0)
    assert _mixed_precision("auto", cpu) == "bf16"

def test_an_explicit_slow_dtype_runs_with_one_warning_that_gives_the_ratio(monkeypatch):
    _speeds(monkeypatch, fp32=42.0, bf16=0.7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = hardware.resolve_precision("cpu", "bf16")
        hardware.resolve_precision("cpu", "bf16")
    assert first.dtype == torch.bfloat16 and first.reason == "asked for"
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "60x slower" in messages[0]
    _speeds(monkeypatch, fp32=200.0, bf16=800.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hardware.resolve_precision("cpu", "bf16")
    assert not caught


def test_the_measurement_is_cached_per_machine(fresh_cache):
    first = hardware.cpu_speeds()
    assert not first.cached and first.fp32 > 0 and first.bf16 > 0
    files = list((fresh_cache / "hardware").glob("cpu-matmul-*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["result"]["fp32"] == pytest.approx(first.fp32)
    hardware._cpu_speeds.cache_clear()
    second = hardware.cpu_speeds()
    assert second.cached and second.fp32 == pytest.approx(first.fp32)


def test_a_damaged_cache_file_is_measured_again(fresh_cache):
    hardware.cpu_speeds()
    path = next((fresh_cache / "hardware").glob("cpu-matmul-*.json"))
    path.write_text("{not json")
    hardware._cpu_speeds.cache_clear()
    assert not hardware.cpu_speeds().cached


def test_results_record_device_dtype_and_torch():
    model = torch.nn.Linear(2, 2)
    record = hardware.model_record(model)
    assert record["device"] == "cpu" and record["dtype"] == "fp32" and record["torch"] == torch.__version__
    assert record["machine"]
    assert hardware.model_record(model.to(torch.bfloat16))["dtype"] == "bf16"


@pytest.mark.parametrize("args", [
    ["eval", "ppl", "--device", "cuda:7"], ["eval", "passkey", "--dtype", "bf17"], ["search", "--factor", "4",
    "--device", "npu"], ["finetune", "--spec", "yarn", "--length", "64", "--steps", "1", "--device", "tpu"],
    ["demo", "--dtype", "fp8"], ["info", "--device", "quantum"], ["extend", "--dtype", "fp9"],
    ["extend", "--device", "cuda:7"], ["verify", "no-export-yet", "--device", "cuda:7"],
    ["tiny", "train", "--test-size", "--device", "cuda:7"], ["tiny", "train", "--test-size", "--dtype", "fp8"],
])
def test_a_bad_device_or_dtype_fails_with_one_line_before_any_model_loads(args, tmp_path):
    if "cuda:7" in args and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    spec = tmp_path / "yarn.json"
    spec.write_text('{"method": "yarn", "factor": 2}')
    args = [str(spec) if a == "yarn" else a for a in args]
    done = subprocess.run([sys.executable, "-m", "longrope.cli", *args, "--out", str(tmp_path / "out")]
                          if args[0] not in ("info", "tiny") else [sys.executable, "-m", "longrope.cli", *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ("device" in lines[0] or "dtype" in lines[0]), done.stderr
    assert "Loading weights" not in done.stderr and not (tmp_path / "out").exists()


def test_info_hardware_says_what_was_chosen_and_why():
    done = subprocess.run([sys.executable, "-m", "longrope.cli", "info", "--hardware", "--device", "cpu",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["device"] == "cpu" and report["dtype"] in ("fp32", "bf16")
    assert "measured" in report["why"] and report["cpu_gflops"]["fp32"] > 0
    assert isinstance(report["scoring_attention"]["used"], bool)
