"""Apply a scaling spec to a live transformers model, in place, and undo it.

`apply` swaps every rotary module of the model for a `ScaledRotaryEmbedding` (`longrope.attention.rotary`) that
writes the same layout, scaling the layers the spec targets (`longrope.attention.model_rope`: every RoPE layer, or
on per-layer-type models the full-attention ones by default), and, for STRING specs, installs STRING attention
(`longrope.attention.string`); `restore` puts the model's own modules back; `sequence_length` declares the length
of the coming sequence to the length-dependent specs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from longrope.attention.model_rope import model_rope
from longrope.attention.rotary import HALF, ScaledRotaryEmbedding, model_geometry  # noqa: F401 (re-exported)
from longrope.attention.string import install_string_attention, uninstall_string_attention
from longrope.errors import LongRopeError
from longrope.rope import RopeGeometry, RopeSpec, inv_freq_for
from longrope.rope.spec import StringSpec


@dataclass
class _PatchRecord:
    originals: list[tuple[nn.Module, str, nn.Module]]
    spec: RopeSpec | tuple[RopeSpec, ...]
    layer_type: str | None = None  # the layer type scaled, on per-layer-type models


def check_window(spec: RopeSpec, geometry: RopeGeometry) -> None:
    """Refuse a spec made for another original window than the model's (its factors would switch and scale at
    the wrong length, silently): e.g. a SmolLM2 spec (8192) on the tiny model (256)."""
    window = getattr(spec, "original_window", None)
    if window is not None and window != geometry.original_window:
        raise LongRopeError(
            f"this {spec.method} spec was made for an original window of {window} tokens, but the model's is "
            f"{geometry.original_window}; use a spec searched for this model (or drop original_window from the "
            "spec file to apply it at this model's window)")


def apply(model: nn.Module, spec: RopeSpec | Sequence[RopeSpec], layer_type: str | None = None) -> nn.Module:
    """Scale the model's RoPE in place with ``spec`` (or one spec per batch row) and return the model.

    ``layer_type``: on models with RoPE per layer type (Gemma 3), the layers to scale (default: the full
    attention ones); the other layer types keep their own RoPE. Applying again replaces the previous scaling
    (never stacks); `restore` brings back the original modules. STRING specs also install STRING attention.
    """
    specs = tuple(spec) if isinstance(spec, (list, tuple)) else (spec,)
    if not specs or not all(isinstance(s, RopeSpec) for s in specs):
        raise LongRopeError(f"apply() needs a RopeSpec or a list of them, got {spec!r}")
    rope = model_rope(model)
    target = rope.target(layer_type)
    geometry = target.geometry
    for s in specs:
        check_window(s, geometry)
        inv_freq_for(s.with_window(geometry.original_window), geometry, None)  # validate against this model
        if isinstance(s, StringSpec):
            s.resolved(geometry.original_window)
    string_specs = [s for s in specs if isinstance(s, StringSpec)]
    if string_specs and (rope.per_layer_type or rope.layouts != (HALF,)):
        raise LongRopeError(f"STRING attention is implemented for models with one half-split RoPE table (Llama, "
                            f"Mistral, Qwen2, Phi-3); {rope.model_type} has "
                            f"{'one per layer type' if rope.per_layer_type else rope.layouts[0] + ' tables'}")
    restore(model)
    originals = []
    for site in rope.sites:
        if site.layer_types is not None and target.layer_type not in site.layer_types:
            continue  # a module serving none of the scaled layers
        targets = None if site.layer_types is None else (target.layer_type,)
        device = next(iter(site.module.buffers()), torch.empty(0)).device
        module = ScaledRotaryEmbedding(specs, geometry, site.layout, targets, original=site.module).to(device)
        setattr(site.parent, site.attr, module)
        originals.append((site.parent, site.attr, site.module))
    model._longrope_patch = _PatchRecord(originals, specs[0] if len(specs) == 1 else specs, target.layer_type)
    if string_specs:
        if len(string_specs) != len(specs) or len(set(string_specs)) != 1:
            restore(model)
            raise LongRopeError("STRING cannot be mixed with other specs in one batch")
        install_string_attention(model, string_specs[0].with_window(geometry.original_window), geometry)
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undo `apply`: put the model's own rotary modules (and attention) back."""
    record: _PatchRecord | None = getattr(model, "_longrope_patch", None)
    if record is None:
        return model
    for parent, attr, original in record.originals:
        setattr(parent, attr, original)
    uninstall_string_attention(model)
    del model._longrope_patch
    return model


def current_spec(model: nn.Module) -> RopeSpec | tuple[RopeSpec, ...] | None:
    """The spec applied by `apply`, or None for the model's own RoPE."""
    record = getattr(model, "_longrope_patch", None)
    return None if record is None else record.spec


def scaled_layer_type(model: nn.Module) -> str | None:
    """The layer type `apply` scaled on a per-layer-type model (None: a flat model, or not patched)."""
    record = getattr(model, "_longrope_patch", None)
    return None if record is None else record.layer_type


def _scaled_modules(model: nn.Module) -> list[ScaledRotaryEmbedding]:
    return [m for m in model.modules() if isinstance(m, ScaledRotaryEmbedding)]


@contextlib.contextmanager
def sequence_length(model: nn.Module, length: int) -> Iterator[None]:
    """Declare the full length of the coming sequence (prompt + generated tokens, or all prefill chunks).

    LongRoPE's short/long choice and dynamic NTK's base are then made from it once, when the sequence starts.
    """
    modules = _scaled_modules(model)
    previous = [m.length_hint for m in modules]
    for m in modules:
        m.length_hint = int(length)
    try:
        yield
    finally:
        for m, value in zip(modules, previous):
            m.length_hint = value
