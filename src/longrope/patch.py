"""Apply a scaling spec to a live transformers model, in place, and undo it.

This is the one module that knows transformers' internals: decoder models keep one rotary module
(``LlamaRotaryEmbedding``, ``Phi3RotaryEmbedding``, ...) whose ``forward(x, position_ids)`` returns
``(cos, sin)`` of shape [batch, seq, rotary_dim]. We swap it for `ScaledRotaryEmbedding`, which computes the
same tables from a `RopeSpec`, adds LongRoPE's n_hat, per-row specs (several candidates in one batch), and
chooses length-dependent tables (short/long factors, dynamic NTK) once per sequence.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from longrope.errors import LongRopeError
from longrope.rope import RopeGeometry, RopeSpec, inv_freq_for
from longrope.rope.frequencies import base_inv_freq
from longrope.rope.spec import DynamicNTKSpec, LongRopeSpec, StringSpec


def _is_rotary(module: nn.Module) -> bool:
    return type(module).__name__.endswith("RotaryEmbedding") or isinstance(module, ScaledRotaryEmbedding)


def find_rotary_modules(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Every rotary embedding module as (parent, attribute name, module)."""
    found = []
    for _, parent in model.named_modules():
        for attr, child in parent.named_children():
            if _is_rotary(child):
                found.append((parent, attr, child))
    return found


def model_geometry(model: nn.Module) -> RopeGeometry:
    """The model's rotary geometry (d, base, original window); a clear error for models without RoPE."""
    config = getattr(model, "config", None)
    if config is None or not find_rotary_modules(model):
        name = type(model).__name__
        raise LongRopeError(
            f"{name} has no rotary position embedding (e.g. GPT-2 learns absolute positions); longrope works on "
            "RoPE models such as Llama, Mistral, Qwen2, Phi-3"
        )
    config = getattr(config, "get_text_config", lambda: config)()
    return RopeGeometry.from_config(config)


class ScaledRotaryEmbedding(nn.Module):
    """Drop-in rotary module computing cos/sin from one spec, or one spec per batch row.

    Length-dependent choices (LongRoPE short/long, dynamic NTK's base) are made when a new sequence starts
    (its position ids start at 0) from max(length hint, length of this call) and kept while the sequence
    continues (decoding, chunked prefill), so cached keys and new queries always share one table.
    """

    def __init__(self, specs: Sequence[RopeSpec], geometry: RopeGeometry):
        super().__init__()
        self.specs = tuple(spec.with_window(geometry.original_window) for spec in specs)
        self.geometry = geometry
        self.register_buffer("base_inv_freq", base_inv_freq(geometry), persistent=False)
        self.register_buffer(
            "n_hat", torch.tensor([getattr(s, "n_hat", 0) for s in self.specs], dtype=torch.long), persistent=False
        )
        self.length_hint: int | None = None
        self.sequence_length: int | None = None  # the length the current tables were chosen for
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._warned = False

    @property
    def length_dependent(self) -> bool:
        return any(isinstance(s, (LongRopeSpec, DynamicNTKSpec)) or
                   (isinstance(s, StringSpec) and isinstance(s.base, (LongRopeSpec, DynamicNTKSpec)))
                   for s in self.specs)

    def tables(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(inv_freq [rows, d/2], attention factor [rows]) for a sequence of ``seq_len`` tokens."""
        key = (seq_len if self.length_dependent else None, str(device))
        if key not in self._tables:
            pairs = [inv_freq_for(spec, self.geometry, seq_len) for spec in self.specs]
            inv = torch.stack([p[0] for p in pairs]).to(device)
            attention = torch.tensor([p[1] for p in pairs], dtype=torch.float32, device=device)
            if len(self._tables) > 64:
                self._tables.clear()
            self._tables[key] = (inv, attention)
        return self._tables[key]

    def _choose_length(self, position_ids: torch.Tensor) -> int:
        longest = int(position_ids.max()) + 1
        if self.sequence_length is None or int(position_ids.min()) == 0:
            self.sequence_length = max(longest, self.length_hint or 0)
        elif longest > self.sequence_length:
            window = self.geometry.original_window
            if self.length_dependent and self.sequence_length <= window < longest and not self._warned:
                warnings.warn(
                    f"sequence grew to {longest} tokens after its RoPE tables were chosen for "
                    f"{self.sequence_length}; keeping them so the KV cache stays consistent. Use "
                    "longrope.patch.sequence_length(model, n) to declare the full length up front.",
                    stacklevel=3,
                )
                self._warned = True
        return self.sequence_length

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq_len = self._choose_length(position_ids)
        inv_freq, attention = self.tables(seq_len, x.device)
        rows = inv_freq.shape[0]
        if rows > 1 and x.shape[0] != rows:
            raise LongRopeError(f"{rows} per-row specs are applied but the batch has {x.shape[0]} rows")
        positions = position_ids[..., None].float()  # [B, T, 1]
        freqs = positions * inv_freq[:, None, :]  # [B, T, d/2]
        if bool((self.n_hat > 0).any()):
            # LongRoPE's n_hat: the first n_hat positions keep the unscaled frequencies.
            unscaled = positions * self.base_inv_freq.to(x.device)
            early = position_ids[..., None] < self.n_hat.to(x.device)[:, None, None]
            freqs = torch.where(early, unscaled, freqs)
        emb = torch.cat((freqs, freqs), dim=-1)
        scale = attention[:, None, None]
        return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)


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
        try:
            from longrope.string_attention import install_string_attention
        except ModuleNotFoundError:
            restore(model)
            raise LongRopeError("STRING attention is not available in this build of longrope") from None
        install_string_attention(model, string_specs[0].with_window(geometry.original_window), geometry)
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undo `apply`: put the model's own rotary modules (and attention) back."""
    record: _PatchRecord | None = getattr(model, "_longrope_patch", None)
    if record is None:
        return model
    for parent, attr, original in record.originals:
        setattr(parent, attr, original)
    try:
        from longrope.string_attention import uninstall_string_attention
    except ModuleNotFoundError:
        pass
    else:
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
