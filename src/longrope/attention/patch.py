"""Apply a scaling spec to a live transformers model, in place, and undo it.

`apply` swaps every rotary module of the model for one `ScaledRotaryEmbedding` (`longrope.attention.rotary`) and,
for STRING specs, installs STRING attention (`longrope.attention.string`); `restore` puts the model's own modules
back; `sequence_length` declares the length of the coming sequence to the length-dependent specs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from longrope.attention.rotary import ScaledRotaryEmbedding, find_rotary_modules, model_geometry
from longrope.attention.string import install_string_attention, uninstall_string_attention
from longrope.errors import LongRopeError
from longrope.rope import RopeGeometry, RopeSpec, inv_freq_for
from longrope.rope.spec import StringSpec


@dataclass
class _PatchRecord:
    originals: list[tuple[nn.Module, str, nn.Module]]
    spec: RopeSpec | tuple[RopeSpec, ...]


def check_window(spec: RopeSpec, geometry: RopeGeometry) -> None:
    """Refuse a spec made for another original window than the model's (its factors would switch and scale at
    the wrong length, silently): e.g. a SmolLM2 spec (8192) on the tiny model (256)."""
    window = getattr(spec, "original_window", None)
    if window is not None and window != geometry.original_window:
        raise LongRopeError(
            f"this {spec.method} spec was made for an original window of {window} tokens, but the model's is "
            f"{geometry.original_window}; use a spec searched for this model (or drop original_window from the "
            "spec file to apply it at this model's window)")


def apply(model: nn.Module, spec: RopeSpec | Sequence[RopeSpec]) -> nn.Module:
    """Scale the model's RoPE in place with ``spec`` (or one spec per batch row) and return the model.

    Applying again replaces the previous scaling (never stacks); `restore` brings back the original module.
    STRING specs also install STRING attention.
    """
    specs = tuple(spec) if isinstance(spec, (list, tuple)) else (spec,)
    if not specs or not all(isinstance(s, RopeSpec) for s in specs):
        raise LongRopeError(f"apply() needs a RopeSpec or a list of them, got {spec!r}")
    geometry = model_geometry(model)
    for s in specs:
        check_window(s, geometry)
        inv_freq_for(s.with_window(geometry.original_window), geometry, None)  # validate against this model
        if isinstance(s, StringSpec):
            s.resolved(geometry.original_window)
    restore(model)
    originals = []
    module = ScaledRotaryEmbedding(specs, geometry)
    for parent, attr, child in find_rotary_modules(model):
        device = next(iter(child.buffers()), torch.empty(0)).device
        setattr(parent, attr, module.to(device))
        originals.append((parent, attr, child))
    model._longrope_patch = _PatchRecord(originals, specs[0] if len(specs) == 1 else specs)
    string_specs = [s for s in specs if isinstance(s, StringSpec)]
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
