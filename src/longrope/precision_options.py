"""The ``--device`` and ``--dtype`` options every command that runs a model shares, declared once.

They are checked (`check_precision`) before a model loads, so a missing GPU or a mistyped dtype costs nothing.
"""

from __future__ import annotations

from typing import Annotated

import typer

from longrope.hardware import DEVICE_CHOICES, DTYPE_CHOICES, Precision, resolve_precision

DeviceOpt = Annotated[str, typer.Option(
    "--device", help=f"Where the model runs: {DEVICE_CHOICES} (auto: CUDA, else MPS, else CPU)")]
DtypeOpt = Annotated[str, typer.Option(
    "--dtype", help=f"{', '.join(DTYPE_CHOICES)}; auto: bf16 on a GPU that has it (else fp16), on a CPU bf16 only "
                    "where it measured faster than fp32 (`longrope info --hardware`)")]


def check_precision(device: str, dtype: str) -> Precision:
    """Resolve the two options (one warning for a dtype that is slow here); `LongRopeError` for bad ones."""
    return resolve_precision(device, dtype)
