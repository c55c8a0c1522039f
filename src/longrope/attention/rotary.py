"""The rotary module that replaces a transformers model's own: cos/sin tables computed from a `RopeSpec`.

Decoder models keep one rotary module (``LlamaRotaryEmbedding``, ``Phi3RotaryEmbedding``, ...) whose
``forward(x, position_ids)`` returns the tables their attention rotates queries and keys with. Three layouts exist
in transformers 5 (`LAYOUTS`), and the replacement must write the one of the module it replaces:

- ``half``: ``(cos, sin)`` [batch, seq, d] of ``cat(freqs, freqs)``; pairs are (i, i + d/2) (Llama, Mistral, ...);
- ``interleaved``: ``(cos, sin)`` of ``repeat_interleave(freqs, 2)``; pairs are (2i, 2i + 1) (Cohere, Cohere 2);
- ``complex``: one complex ``freqs_cis`` [batch, seq, d/2] = ``polar(m, freqs)`` (DeepSeek-V2, Llama 4);
- ``pairs``: ``(cos, sin)`` [batch, seq, d/2], one entry per pair; the attention pairs the channels (GPT-OSS,
  DeepSeek-V4);
- ``sin_cos_pairs``: ``(sin, cos)`` [batch, seq, d/2] (CodeGen, GPT-J, whose own module reads a table
  precomputed up to ``max_position_embeddings``).

Some modules serve several layer types (Gemma 3: ``forward(x, position_ids, layer_type)``, one table per type);
the replacement computes the targeted types' tables and passes the others to the module it replaced.

`ScaledRotaryEmbedding` computes the tables from a `RopeSpec`, adds LongRoPE's n_hat, per-row specs (several
candidates in one batch), and chooses length-dependent tables (short/long factors, dynamic NTK) once per sequence.
`longrope.attention.model_rope` reads what a model's rotary modules compute (layout, layer types, geometry) and
`longrope.attention.patch` swaps the replacement in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from longrope.errors import LongRopeError
from longrope.rope import RopeGeometry, RopeSpec, inv_freq_for
from longrope.rope.frequencies import base_inv_freq

HALF, INTERLEAVED, COMPLEX, PAIRS, SIN_COS_PAIRS = "half", "interleaved", "complex", "pairs", "sin_cos_pairs"
LAYOUTS = (HALF, INTERLEAVED, COMPLEX, PAIRS, SIN_COS_PAIRS)
_NOT_TEXT = ("Vision", "Visual", "Audio", "Image", "Video", "Speech")  # rotary modules of other towers


def _is_rotary(module: nn.Module) -> bool:
    return type(module).__name__.endswith("RotaryEmbedding") or isinstance(module, ScaledRotaryEmbedding)


def _decoder(model: nn.Module) -> nn.Module:
    """The language model inside ``model`` (its own decoder for multimodal wrappers), else ``model``."""
    getter = getattr(model, "get_decoder", None)
    try:
        decoder = getter() if callable(getter) else None
    except Exception:  # a wrapper without a decoder rule
        decoder = None
    return decoder if isinstance(decoder, nn.Module) else model


def find_rotary_modules(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Every rotary embedding module of the language model as (parent, attribute name, module).

    Rotary modules of vision / audio towers (a multimodal model's other inputs) are not the text's and are left
    out; so is the module a `ScaledRotaryEmbedding` keeps for the layer types it does not scale.
    """
    found = []
    for root in dict.fromkeys((_decoder(model), model)):
        for _, parent in root.named_modules():
            for attr, child in parent.named_children():
                if _is_rotary(child) and not any(mark in type(child).__name__ for mark in _NOT_TEXT):
                    found.append((parent, attr, child))
        if found:
            break
    return found


def model_geometry(model: nn.Module, layer_type: str | None = None) -> RopeGeometry:
    """The geometry (d, base, original window) a spec is applied with: that of the layers it scales (``layer_type``,
    default: the model's default target, `longrope.attention.model_rope`); a clear error for models without RoPE
    or whose RoPE longrope cannot reproduce."""
    from longrope.attention.model_rope import model_rope

    return model_rope(model).target(layer_type).geometry


class ScaledRotaryEmbedding(nn.Module):
    """Drop-in rotary module computing its tables from one spec, or one spec per batch row.

    ``layout``: one of `LAYOUTS`, the output format of the module replaced. ``targets``: the layer types scaled
    when the module replaced serves several (``forward(x, position_ids, layer_type)``); other layer types are
    computed by ``original``, the module replaced (kept outside the module tree, so it is never found or moved as
    one of ours).

    Length-dependent choices (LongRoPE short/long, dynamic NTK's base) are made when a new sequence starts
    (its position ids start at 0) from max(length hint, length of this call) and kept while the sequence
    continues (decoding, chunked prefill), so cached keys and new queries always share one table.
    """

    def __init__(self, specs: Sequence[RopeSpec], geometry: RopeGeometry, layout: str = HALF,
                 targets: Sequence[str] | None = None, original: nn.Module | None = None):
        super().__init__()
        if layout not in LAYOUTS:
            raise LongRopeError(f"rotary layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.specs = tuple(spec.with_window(geometry.original_window) for spec in specs)
        self.geometry = geometry
        self.layout = layout
        self.targets = None if targets is None else tuple(targets)
        self._original = (original,)  # a tuple: not a submodule
        self.register_buffer("base_inv_freq", base_inv_freq(geometry), persistent=False)
        self.register_buffer(
            "n_hat", torch.tensor([getattr(s, "n_hat", 0) for s in self.specs], dtype=torch.long), persistent=False
        )
        self.length_hint: int | None = None
        self.sequence_length: int | None = None  # the length the current tables were chosen for
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._warned = False

    @property
    def original(self) -> nn.Module | None:
        return self._original[0]

    @property
    def config(self):
        """The replaced module's config (some models read ``rotary_emb.config``, e.g. Granite SWA's per-layer
        bases)."""
        return getattr(self.original, "config", None)

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
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None, **kwargs):
        if self.targets is not None and layer_type not in self.targets:
            if self.original is None:
                raise LongRopeError(f"no rotary table for layer type {layer_type!r} (scaled: {self.targets})")
            return self.original(x, position_ids, layer_type, **kwargs)
        if position_ids.dim() == 3:  # multimodal RoPE (Qwen3.5, ...): one position stream per axis (t, h, w)
            if not bool((position_ids == position_ids[:1]).all()):
                raise LongRopeError("multimodal RoPE positions (image / video grids) are not scaled by longrope: "
                                    "it scales text, whose positions are equal on every axis")
            position_ids = position_ids[0]
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
        scale = attention[:, None, None]
        if self.layout == COMPLEX:
            return torch.polar(torch.ones_like(freqs), freqs) * scale  # [B, T, d/2] complex64
        if self.layout == INTERLEAVED:
            emb = torch.repeat_interleave(freqs, 2, dim=-1)
        elif self.layout == HALF:
            emb = torch.cat((freqs, freqs), dim=-1)
        else:
            emb = freqs
        cos, sin = (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)
        return (sin, cos) if self.layout == SIN_COS_PAIRS else (cos, sin)
