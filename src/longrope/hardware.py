"""Where a model runs and in which dtype: one policy for every command and library entry point.

``device="auto"``: CUDA, else MPS, else CPU. ``dtype="auto"``: on CUDA bf16 where the card supports it, else fp16
(losses are computed in fp32 everywhere); on MPS fp32; on a CPU *measured*: bf16 matrix products are ~4x faster
than fp32 on a CPU with AVX-512-bf16 and ~60x slower on one with only AVX2 (41.6 vs 0.7 GFLOP/s seen), so the
first run on a machine times a small product in each dtype (well under a second) and picks bf16 only where it is
clearly faster. The verdict is kept in the cache, keyed by the CPU, its flags, the thread count and the torch
version, so later runs pay nothing.

A user's explicit choice is honoured, with one warning when the measurement says it is slow on this CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch

from longrope.errors import LongRopeError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
SHORT_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# bf16 is chosen on a CPU only when its products run at least this much faster than fp32: below that the halved
# memory traffic does not pay for the rounding (and timing noise on a busy machine must not flip the verdict).
BF16_MIN_SPEEDUP = 1.5
# The measured product: large enough to reach a CPU's matmul regime, small enough that a slow bf16 CPU
# (~1 GFLOP/s) spends ~0.1 s on it.
PROBE_SIZE = 384
PROBE_SECONDS = 0.08
CPU_FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "neon", "asimd")


def cpu_description() -> tuple[str, list[str]]:
    """(CPU model name, the SIMD flags that decide bf16 speed) from /proc/cpuinfo, or what ``platform`` says."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model name")) and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown CPU", \
        [f for f in CPU_FLAGS_SHOWN if f in flags]


def cpu_summary() -> str:
    """One line naming this CPU for result files and benchmark output."""
    model, flags = cpu_description()
    return (f"{model}; {os.cpu_count()} cores; {' '.join(flags) or 'no AVX2/AVX-512 flags'}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; refuses one this machine lacks."""
    if isinstance(device, torch.device):
        device = str(device)
    text = str(device).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise LongRopeError("--device mps: this machine has no usable MPS (Apple GPU); use --device cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise LongRopeError(f"--device: unknown device {device!r}; choose {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise LongRopeError(f"--device {text}: CUDA is not available here (torch {torch.__version__}, "
                            f"{'a CPU-only build' if torch.version.cuda is None else 'no GPU visible'}); "
                            "use --device cpu or auto")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise LongRopeError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                            f"numbered from 0")
    return torch.device("cuda", index) if match.group(1) is not None else torch.device("cuda")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype | None:
    """The torch dtype for a name (``fp32``, ``bf16``, ``fp16`` or their long forms); None for ``auto``."""
    if isinstance(dtype, torch.dtype):
        if dtype not in SHORT_NAMES:
            raise LongRopeError(f"--dtype: {dtype} is not supported; choose one of {', '.join(DTYPE_CHOICES)}")
        return dtype
    text = str(dtype).strip().lower()
    if text == "auto":
        return None
    if text not in DTYPES:
        raise LongRopeError(f"--dtype: unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[text]


def dtype_name(dtype: torch.dtype) -> str:
    return SHORT_NAMES.get(dtype, str(dtype).removeprefix("torch."))


@dataclass(frozen=True)
class CpuSpeeds:
    """Measured GFLOP/s of a ``PROBE_SIZE`` square matmul in each dtype on this CPU, with this many threads."""

    fp32: float
    bf16: float
    threads: int
    cached: bool = False

    @property
    def bf16_speedup(self) -> float:
        return self.bf16 / self.fp32 if self.fp32 > 0 else 0.0

    @property
    def bf16_fast(self) -> bool:
        return self.bf16_speedup >= BF16_MIN_SPEEDUP


def _gflops(dtype: torch.dtype, size: int = PROBE_SIZE, seconds: float = PROBE_SECONDS) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up: the first call of a dtype sets up its kernels
    runs, start = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * size**3 * runs / elapsed / 1e9


def measurement_key(name: str) -> str:
    """A cache file name for a measurement that holds for this CPU, its flags, thread count and torch version."""
    model, flags = cpu_description()
    identity = f"{name}|{model}|{' '.join(flags)}|{torch.get_num_threads()}|{torch.__version__}"
    return f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.json"


def cached_measurement(name: str, measure: Callable[[], dict]) -> tuple[dict, bool]:
    """``(result, came from the cache)``: ``measure()`` is run once per machine and torch version and kept in
    ``$LONGROPE_CACHE/hardware/``. A cache that cannot be read or written only costs a new measurement."""
    from longrope.atomic import atomic_write_text
    from longrope.paths import cache_root

    path = cache_root() / "hardware" / measurement_key(name)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(stored, dict) and stored.get("name") == name and isinstance(stored.get("result"), dict):
            return stored["result"], True
    except (OSError, ValueError):
        pass
    result = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"name": name, "cpu": cpu_summary(), "result": result}, indent=2))
    except OSError:
        pass
    return result, False


@cache
def _cpu_speeds(threads: int) -> CpuSpeeds:
    def measure() -> dict:
        return {"fp32": _gflops(torch.float32), "bf16": _gflops(torch.bfloat16)}

    result, cached = cached_measurement("cpu-matmul", measure)
    try:
        return CpuSpeeds(float(result["fp32"]), float(result["bf16"]), threads, cached)
    except (KeyError, TypeError, ValueError):
        return CpuSpeeds(**measure(), threads=threads)


def cpu_speeds() -> CpuSpeeds:
    """This CPU's measured fp32 and bf16 matmul speed (measured once per machine, then read from the cache)."""
    return _cpu_speeds(torch.get_num_threads())


def auto_dtype(device: torch.device) -> torch.dtype:
    """The dtype ``auto`` stands for on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_speeds().bf16_fast else torch.float32
    return torch.float32


_warned: set[tuple[str, str]] = set()


def warn_if_slow(dtype: torch.dtype, device: torch.device) -> None:
    """One warning (per process) when an explicit dtype is much slower than fp32 on this device."""
    if device.type != "cpu" or dtype == torch.float32 or (str(device), str(dtype)) in _warned:
        return
    speeds = cpu_speeds()
    if dtype == torch.bfloat16:
        if speeds.bf16_fast or speeds.bf16_speedup >= 1 / BF16_MIN_SPEEDUP:
            return
        ratio = speeds.fp32 / max(speeds.bf16, 1e-9)
        message = (f"--dtype bf16 is {ratio:.0f}x slower than fp32 on this CPU (measured {speeds.bf16:.1f} vs "
                   f"{speeds.fp32:.1f} GFLOP/s: no AVX-512-bf16); --dtype auto would use fp32")
    else:
        message = f"--dtype {dtype_name(dtype)} on a CPU runs slowly (no fp16 matmul kernels); --dtype auto picks fp32"
    _warned.add((str(device), str(dtype)))
    warnings.warn(message, UserWarning, stacklevel=3)


@dataclass(frozen=True)
class Precision:
    """The resolved device and dtype, and why: what every result file records (`record`)."""

    device: torch.device
    dtype: torch.dtype
    reason: str

    def record(self) -> dict:
        return {"device": str(self.device), "dtype": dtype_name(self.dtype), "torch": torch.__version__}


def resolve_precision(device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                      warn: bool = True) -> Precision:
    """Resolve ``device`` and ``dtype`` (each may be ``auto``) into a `Precision`, refusing what this machine
    lacks. Call it before loading a model so bad input fails fast."""
    resolved = resolve_device(device)
    explicit = parse_dtype(dtype)
    if explicit is not None:
        if explicit == torch.bfloat16 and resolved.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise LongRopeError("--dtype bf16: this GPU does not support bf16; use --dtype fp16 or auto")
        if warn:
            warn_if_slow(explicit, resolved)
        return Precision(resolved, explicit, "asked for")
    chosen = auto_dtype(resolved)
    if resolved.type == "cpu":
        speeds = cpu_speeds()
        why = (f"measured on this CPU: bf16 {speeds.bf16:.1f} vs fp32 {speeds.fp32:.1f} GFLOP/s "
               f"({speeds.bf16_speedup:.2f}x; bf16 needs >= {BF16_MIN_SPEEDUP}x)")
    elif resolved.type == "cuda":
        why = "the GPU supports bf16" if chosen == torch.bfloat16 else "the GPU has no bf16: fp16, losses in fp32"
    else:
        why = "MPS: fp32"
    return Precision(resolved, chosen, why)


def model_record(model: torch.nn.Module) -> dict:
    """Device, dtype, torch version and the machine of a loaded model, for result files."""
    parameters = getattr(model, "parameters", None)  # a stand-in object in a test or notebook has none
    param = next(parameters(), None) if callable(parameters) else None
    device = param.device if param is not None else torch.device("cpu")
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_summary()
    return {"device": str(device), "dtype": dtype_name(param.dtype) if param is not None else "fp32",
            "torch": torch.__version__, "machine": machine}


def autocast_dtype(device: torch.device, dtype: str | torch.dtype = "auto") -> torch.dtype | None:
    """The dtype for mixed precision (an fp32 model whose products run lower) on ``device``, or None for none.
    ``auto``: bf16 where it is fast (CUDA with bf16, a bf16-fast CPU), fp16 on CUDA without it, else none; an
    explicit ``dtype`` goes through `resolve_precision` (refused where missing, warned where slow), fp32 = none."""
    if dtype != "auto":
        chosen = resolve_precision(device, dtype).dtype
        return None if chosen == torch.float32 else chosen
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_speeds().bf16_fast:
        return torch.bfloat16
    return None
