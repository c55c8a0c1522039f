"""Inverse frequencies and attention factor for every scaling method: one function per method, one table.

Every function has the signature ``fn(spec, geometry, seq_len) -> (inv_freq [d/2] float32, attention_factor)``
(the shape of transformers' ``ROPE_INIT_FUNCTIONS``). ``seq_len`` is the length of the sequence being
processed; only dynamic NTK and LongRoPE's short/long switch look at it.

Formulas: each method follows transformers' ``modeling_rope_utils`` (5.24), function by function: PI
``_compute_linear_scaling_rope_parameters``, dynamic NTK ``_compute_dynamic_ntk_parameters``, YaRN
``_compute_yarn_parameters`` (ramp and attention factor ``0.1 ln s + 1``, arXiv 2309.00071), Llama-3
``_compute_llama3_parameters``, LongRoPE ``_compute_longrope_parameters`` (short/long factors,
``sqrt(1 + ln s / ln L)``, arXiv 2402.13753); static NTK-aware is the base ``b * s^(d/(d-2))`` (the "NTK-aware
scaled RoPE" post, 2023), which transformers has no function for; STRING keeps its base method's frequencies
(arXiv 2410.18745). Arithmetic is float32 in the same order as transformers so the numbers agree to the last bits
(`tests/rope/test_frequencies.py` checks every method transformers has against it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from longrope.errors import LongRopeError
from longrope.rope.geometry import RopeGeometry
from longrope.rope import spec as specs
from longrope.rope.spec import RopeSpec

RopeFunction = Callable[[RopeSpec, RopeGeometry, "int | None"], tuple[torch.Tensor, float]]


def base_inv_freq(geometry: RopeGeometry, base: float | None = None) -> torch.Tensor:
    """Plain RoPE: inv_freq_i = b^(-2i/d), shape [d/2]."""
    b = geometry.base if base is None else base
    exponents = torch.arange(0, geometry.dim, 2, dtype=torch.int64).float() / geometry.dim
    return 1.0 / (b**exponents)


def _window(spec: RopeSpec, geometry: RopeGeometry) -> int:
    return spec.original_window or geometry.original_window


def _none(spec: RopeSpec, geometry: RopeGeometry, seq_len: int | None) -> tuple[torch.Tensor, float]:
    return base_inv_freq(geometry), 1.0


def _pi(spec: specs.LinearSpec, geometry: RopeGeometry, seq_len: int | None) -> tuple[torch.Tensor, float]:
    return base_inv_freq(geometry) / spec.factor, 1.0


def ntk_base(factor: float, geometry: RopeGeometry) -> float:
    """NTK-aware base b * s^(d/(d-2)) (the enlarged rope_theta the method amounts to)."""
    d = geometry.dim
    if d <= 2:
        raise LongRopeError("ntk needs a rotary dimension > 2")
    return geometry.base * factor ** (d / (d - 2))


def _ntk(spec: specs.NTKSpec, geometry: RopeGeometry, seq_len: int | None) -> tuple[torch.Tensor, float]:
    return base_inv_freq(geometry, ntk_base(spec.factor, geometry)), 1.0


def _dynamic_ntk(spec: specs.DynamicNTKSpec, geometry: RopeGeometry, seq_len: int | None) -> tuple[torch.Tensor, float]:
    # transformers: the window here is the model's max_position_embeddings; lengths below it use the plain base.
    window = _window(spec, geometry)
    n = max(seq_len or window, window)
    d = geometry.dim
    base = geometry.base * ((spec.factor * n / window) - (spec.factor - 1)) ** (d / (d - 2))
    return base_inv_freq(geometry, base), 1.0


def yarn_ramp(spec: specs.YarnSpec, geometry: RopeGeometry) -> torch.Tensor:
    """Per-pair interpolation weight in [0, 1]: 0 keeps the frequency (fast pairs), 1 divides it by s."""
    d, b, window = geometry.dim, geometry.base, _window(spec, geometry)

    def correction_dim(rotations: float) -> float:
        return (d * math.log(window / (rotations * 2 * math.pi))) / (2 * math.log(b))

    low, high = correction_dim(spec.beta_fast), correction_dim(spec.beta_slow)
    if spec.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001  # avoid a division by zero, as the reference does
    return torch.clamp((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low), 0, 1)


def yarn_attention_factor(factor: float) -> float:
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def _yarn(spec: specs.YarnSpec, geometry: RopeGeometry, seq_len: int | None) -> tuple[torch.Tensor, float]:
    pos_freqs = geometry.base ** (torch.arange(0, geometry.dim, 2).float() / geometry.dim)
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (spec.factor * pos_freqs)
    keep = 1 - yarn_ramp(spec, geometry)  # weight of the unscaled frequency
    inv_freq = interpolation * (1 - keep) + extrapolation * keep
    attention = spec.attention_factor if spec.attention_factor is not None else yarn_attention_factor(spec.factor)
    return inv_freq, float(attention)


def _llama3(spec: specs.Llama3Spec, geometry: RopeGeometry, seq_len: int | None) -> tuple[torch.Tensor, float]:
    inv_freq = base_inv_freq(geometry)
    window = _window(spec, geometry)
    low_wavelen = window / spec.low_freq_factor
    high_wavelen = window / spec.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / spec.factor, inv_freq)
    smooth = (window / wavelen - spec.low_freq_factor) / (spec.high_freq_factor - spec.low_freq_factor)
    blended = (1 - smooth) * scaled / spec.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, blended, scaled), 1.0


def longrope_attention_factor(factor: float, original_window: int) -> float:
    """The "su" policy: sqrt(1 + ln(s) / ln(L)), 1 when s <= 1."""
    if factor <= 1:
        return 1.0
    return math.sqrt(1 + math.log(factor) / math.log(original_window))


def longrope_uses_long(spec: specs.LongRopeSpec, geometry: RopeGeometry, seq_len: int | None) -> bool:
    """Long factors for sequences longer than L, short ones otherwise (decide once per sequence)."""
    return seq_len is not None and seq_len > _window(spec, geometry)


def _longrope(spec: specs.LongRopeSpec, geometry: RopeGeometry, seq_len: int | None) -> tuple[torch.Tensor, float]:
    if len(spec.long_factor) != geometry.pairs:
        raise LongRopeError(
            f"longrope: {len(spec.long_factor)} rescale factors given, but the model has {geometry.pairs} rotary "
            f"pairs (rotary dimension {geometry.dim})"
        )
    if longrope_uses_long(spec, geometry, seq_len):
        factors = spec.long_factor
    else:
        factors = spec.short_factor if spec.short_factor is not None else (1.0,) * geometry.pairs
    ext = torch.tensor(factors, dtype=torch.float32)
    shape = torch.arange(0, geometry.dim, 2, dtype=torch.int64).float() / geometry.dim
    inv_freq = 1.0 / (ext * geometry.base**shape)
    attention = spec.attention_factor
    if attention is None:
        attention = longrope_attention_factor(spec.factor, _window(spec, geometry))
    return inv_freq, float(attention)


def _string(spec: specs.StringSpec, geometry: RopeGeometry, seq_len: int | None) -> tuple[torch.Tensor, float]:
    # STRING keeps the frequencies of the scaling it sits on; the shift lives in attention.
    inv_freq, attention = ROPE_FUNCTIONS[spec.base.method](spec.base, geometry, seq_len)
    if spec.attention_factor is not None:
        attention = attention * spec.attention_factor
    return inv_freq, attention


ROPE_FUNCTIONS: dict[str, RopeFunction] = {
    specs.NoScaling.method: _none,
    specs.LinearSpec.method: _pi,
    specs.NTKSpec.method: _ntk,
    specs.DynamicNTKSpec.method: _dynamic_ntk,
    specs.YarnSpec.method: _yarn,
    specs.Llama3Spec.method: _llama3,
    specs.LongRopeSpec.method: _longrope,
    specs.StringSpec.method: _string,
}

STATIC_METHODS = ("none", "pi", "ntk", "yarn", "llama3", "longrope")


def inv_freq_for(spec: RopeSpec, geometry: RopeGeometry, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [d/2] and attention factor of ``spec`` for a sequence of ``seq_len`` tokens."""
    return ROPE_FUNCTIONS[spec.method](spec, geometry, seq_len)


def rescale_factors(spec: RopeSpec, geometry: RopeGeometry) -> tuple[torch.Tensor, float]:
    """The method as per-pair factors lambda_i = inv_freq_i / inv_freq'_i (float64), and its attention factor.

    These are the seeds of the LongRoPE search. Only static methods (and LongRoPE's long factors) qualify.
    """
    if spec.method not in STATIC_METHODS:
        raise LongRopeError(f"{spec.method} depends on the sequence length and has no fixed rescale factors")
    if isinstance(spec, specs.LongRopeSpec):
        return torch.tensor(spec.long_factor, dtype=torch.float64), inv_freq_for(spec, geometry, None)[1]
    # Exact closed forms where they exist, so seeds carry no float32 noise.
    d, i = geometry.dim, torch.arange(geometry.pairs, dtype=torch.float64)
    if isinstance(spec, specs.NoScaling):
        return torch.ones(geometry.pairs, dtype=torch.float64), 1.0
    if isinstance(spec, specs.LinearSpec):
        return torch.full((geometry.pairs,), float(spec.factor), dtype=torch.float64), 1.0
    if isinstance(spec, specs.NTKSpec):
        return spec.factor ** ((2 * i / d) * d / (d - 2)), 1.0
    base = base_inv_freq(geometry).double()
    scaled, attention = inv_freq_for(spec, geometry, None)
    return base / scaled.double(), attention
