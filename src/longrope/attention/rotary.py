"""The rotary module that replaces a transformers model's own: cos/sin tables computed from a `RopeSpec`.

Decoder models keep one rotary module (``LlamaRotaryEmbedding``, ``Phi3RotaryEmbedding``, ...) whose
``forward(x, position_ids)`` returns ``(cos, sin)`` of shape [batch, seq, rotary_dim]. `ScaledRotaryEmbedding`
computes the same tables from a `RopeSpec`, adds LongRoPE's n_hat, per-row specs (several candidates in one
batch), and chooses length-dependent tables (short/long factors, dynamic NTK) once per sequence.
`longrope.attention.patch` swaps it into a model; this module only finds rotary modules and reads the geometry.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from longrope.errors import LongRopeError
from longrope.rope import RopeGeometry, RopeSpec, inv_freq_for
from longrope.rope.frequencies import base_inv_freq


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
        return any(s.length_dependent for s in self.specs)

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
                    "longrope.attention.sequence_length(model, n) to declare the full length up front.",
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
