"""The rope part of a GGUF export: which tensors and keys make llama.cpp compute a spec's frequencies.

How llama.cpp takes per-dimension RoPE factors (names from ``gguf.constants``; see notes/export.md):

- ``phi3`` architecture: tensors ``rope_factors_long.weight`` and ``rope_factors_short.weight`` (float32,
  [d/2]); llama.cpp picks the long table when the context it was started with (``-c``, per sequence) exceeds
  ``{arch}.rope.scaling.original_context_length``, the short one otherwise -- once per context, never per call.
- ``llama`` architecture (also Mistral, converted to ``llama`` by llama.cpp): one tensor ``rope_freqs.weight``
  (float32, [d/2]) used at every length; this is how Llama 3.1's scaling ships.
- Both: each entry divides the pair's frequency (theta_i / factor_i), which is exactly LongRoPE's lambda_i;
  ``{arch}.rope.scaling.attn_factor`` multiplies cos and sin, which is our attention factor.

Every fixed-table method (PI, NTK, YaRN, Llama-3, LongRoPE) is written this way, as factors lambda_i; dynamic
NTK (length dependent) and STRING (changes attention) cannot be, and LongRoPE's n_hat is lost (``lossy``).
On ``llama`` GGUFs a LongRoPE spec's short factors are lost too (one table, used at every length).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longrope.errors import LongRopeError
from longrope.export.hf import reduce_spec
from longrope.rope import (
    DynamicNTKSpec,
    LongRopeSpec,
    NoScaling,
    RopeGeometry,
    RopeSpec,
    StringSpec,
    inv_freq_for,
    rescale_factors,
)

# Architectures whose llama.cpp graph reads per-dimension rope factors, and the tensors it reads.
FACTOR_ARCHITECTURES = ("llama", "phi3")
# Keys we own in an exported file: dropped from a copied GGUF, then written anew.
_SCALING_KEYS = ("type", "factor", "attn_factor", "original_context_length", "finetuned",
                 "yarn_log_multiplier", "yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow")


def _names():
    import gguf

    tensor_names = gguf.constants.TENSOR_NAMES
    return {
        "freqs": tensor_names[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
        "long": tensor_names[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight",
        "short": tensor_names[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight",
    }


def rope_tensor_names() -> dict[str, str]:
    """{'freqs': 'rope_freqs.weight', 'long': 'rope_factors_long.weight', 'short': 'rope_factors_short.weight'}."""
    return _names()


@dataclass
class GgufRopePlan:
    """The rope part of a GGUF export.

    tensors: tensor name -> float32 [d/2] factors (divisors of each pair's frequency).
    keys: GGUF key -> value (context length, original context length, attention factor).
    lost: what llama.cpp cannot express (empty unless ``lossy``).
    """

    arch: str
    tensors: dict[str, np.ndarray]
    keys: dict[str, Any]
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _factor_table(spec: RopeSpec, geometry: RopeGeometry) -> tuple[np.ndarray, np.ndarray, float]:
    """(long factors, short factors, attention factor) of a fixed-table spec, float32 [d/2] each."""
    if isinstance(spec, LongRopeSpec):
        long = np.asarray(spec.long_factor, dtype=np.float32)
        short = np.asarray(spec.short_factor if spec.short_factor is not None else [1.0] * len(long), np.float32)
        return long, short, float(inv_freq_for(spec, geometry, None)[1])
    if isinstance(spec, NoScaling):
        ones = np.ones(geometry.pairs, dtype=np.float32)
        return ones, ones, 1.0
    factors, attention = rescale_factors(spec, geometry)
    table = factors.numpy().astype(np.float32)
    return table, table, float(attention)


def plan_gguf_rope(arch: str, spec: RopeSpec, geometry: RopeGeometry, target_window: int | None = None,
                   lossy: bool = False) -> GgufRopePlan:
    """Tensors and keys that make llama.cpp's ``arch`` graph use ``spec``'s frequencies."""
    if arch not in FACTOR_ARCHITECTURES:
        raise LongRopeError(
            f"llama.cpp reads per-dimension rope factors only for {' and '.join(FACTOR_ARCHITECTURES)} GGUFs; "
            f"its '{arch}' graph ignores them"
        )
    window = spec.original_window or geometry.original_window
    spec = spec.with_window(window)
    inv_freq_for(spec, geometry, None)  # validates the factor count against the model
    if isinstance(spec, StringSpec):
        spec.resolved(geometry.original_window)
    reduced, lost, leftover = reduce_spec(spec, geometry)
    reduced = reduced.with_window(window)
    if isinstance(reduced, DynamicNTKSpec):
        raise LongRopeError("dynamic NTK changes the base with the sequence length; a GGUF can only carry fixed "
                            "factors (use ntk, yarn or longrope for llama.cpp)")
    long, short, attention = _factor_table(reduced, geometry)
    attention *= leftover  # GGUF's attn_factor carries any attention factor
    names = _names()
    notes: list[str] = []
    if arch == "phi3":
        tensors = {names["long"]: long, names["short"]: short}
    else:
        if isinstance(reduced, LongRopeSpec) and not np.array_equal(long, short):
            lost.append(
                f"LongRoPE short factors: llama.cpp's {arch} graph has one factor table (rope_freqs), so the long "
                f"factors apply at every length, also inside the original window of {window} tokens"
            )
        tensors = {names["freqs"]: long}
    if lost and not lossy:
        raise LongRopeError(f"a {arch} GGUF cannot express {'; '.join(lost)}. Pass lossy=True (--lossy) to export "
                            "without it")
    factor = float(getattr(reduced, "factor", 1.0) or 1.0)
    context = int(target_window or round(window * factor))
    keys = {
        f"{arch}.context_length": context,
        f"{arch}.rope.scaling.original_context_length": int(window),
        f"{arch}.rope.scaling.attn_factor": float(attention),
    }
    notes.append(f"{reduced.method} written as per-pair frequency divisors {sorted(tensors)} and attention factor "
                 f"{attention:.6g}")
    return GgufRopePlan(arch, tensors, keys, lost, notes)
