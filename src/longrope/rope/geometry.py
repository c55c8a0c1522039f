"""What a model's rotary embedding looks like: rotary dimension, base and original window."""

from __future__ import annotations

import math
from dataclasses import dataclass

from longrope.errors import LongRopeError


@dataclass(frozen=True)
class RopeGeometry:
    """The numbers every scaling method needs from the model.

    dim: rotary dimension d (head_dim * partial_rotary_factor); there are d/2 rotated pairs.
    base: rope_theta b.
    original_window: the pretraining context length L.
    """

    dim: int
    base: float
    original_window: int

    def __post_init__(self) -> None:
        if self.dim < 2 or self.dim % 2:
            raise LongRopeError(f"rotary dimension must be even and >= 2, got {self.dim}")
        if not self.base > 1:
            raise LongRopeError(f"rope base (rope_theta) must be > 1, got {self.base}")
        if self.original_window < 1:
            raise LongRopeError(f"original window must be >= 1, got {self.original_window}")

    @property
    def pairs(self) -> int:
        return self.dim // 2

    def pair_with_periods(self, periods: float) -> int:
        """First pair whose wavelength ``2*pi * b^(2i/d)`` is at least ``L / periods`` (at most ``periods`` full
        turns inside the window): ``ceil((d/2) * log_b(L / (2*pi*periods)))``, clipped to 0..d/2."""
        value = math.ceil(
            self.pairs * math.log(self.original_window / (2 * math.pi * periods)) / math.log(self.base) - 1e-9
        )
        return min(max(value, 0), self.pairs)

    @property
    def critical_pair(self) -> int:
        """First pair whose wavelength exceeds the window: ceil((d/2) * log_b(L / (2*pi))) (LongRoPE2)."""
        return self.pair_with_periods(1.0)

    @property
    def critical_candidates(self) -> tuple[int, ...]:
        """LongRoPE2's candidates for the *real* critical pair: from the pair with ten periods inside the window,
        ``ceil((d/2) * log_b(L / (2*pi*10)))``, up to the theoretical `critical_pair` (both included; kept in
        1..d/2-1 so that pairs below and from the critical one both exist)."""
        high = min(max(self.critical_pair, 1), self.pairs - 1)
        low = min(max(self.pair_with_periods(10.0), 1), high)
        return tuple(range(low, high + 1))

    @property
    def critical_dim(self) -> int:
        """Theoretical critical dimension of LongRoPE2: 2 * ceil((d/2) * log_b(L / (2*pi)))."""
        return 2 * self.critical_pair

    @classmethod
    def from_config(cls, config, layer_type: str | None = None) -> RopeGeometry:
        """Read the geometry from a transformers config (``rope_parameters`` API of transformers 5).

        When the config already carries a scaling with ``original_max_position_embeddings`` (e.g. Phi-3 128k),
        that is the original window; otherwise ``max_position_embeddings`` is. Configs with one
        ``rope_parameters`` entry per layer type (Gemma 3: sliding and full attention) need ``layer_type``;
        without it the entry of the default target (`default_layer_type`) is read.
        """
        nested = rope_layer_types(config)
        if nested and layer_type is None:
            layer_type = default_layer_type(config)
        params = layer_rope_parameters(config, layer_type)
        if params is None:
            raise LongRopeError(
                f"{type(config).__name__}'s {layer_type} layers have no rope_parameters: they use no position "
                "embedding (NoPE)")
        base = params.get("rope_theta", getattr(config, "rope_theta", None))
        if base is None and params:  # rope_parameters without a base: transformers' default (CodeGen, GPT-J)
            base = getattr(config, "default_theta", None)
        if base is None:
            raise LongRopeError(
                f"{type(config).__name__} has no rope_theta / rope_parameters: this model does not use rotary "
                "position embeddings"
            )
        layer = _layer_config(config, layer_type)
        head_dim = getattr(layer, "head_dim", None) or layer.hidden_size // layer.num_attention_heads
        partial = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0)
        rotary_dim = getattr(config, "rotary_dim", None)  # CodeGen, GPT-J: the rotated channels, directly
        if getattr(config, "model_type", None) in ROTARY_DIM_MODELS and isinstance(rotary_dim, int) and rotary_dim:
            head_dim, partial = rotary_dim, 1.0
        original = (
            params.get("original_max_position_embeddings")
            or getattr(config, "original_max_position_embeddings", None)
            or config.max_position_embeddings
        )
        return cls(dim=int(head_dim * partial), base=float(base), original_window=int(original))


def _layer_config(config, layer_type: str | None):
    """The config of the first layer of ``layer_type`` on heterogeneous configs (Gemma 4: head_dim per layer),
    else the config itself."""
    if not getattr(config, "is_heterogeneous", False):
        return config
    types = list(getattr(config, "layer_types", None) or ())
    index = types.index(layer_type) if layer_type in types else 0
    return config.per_layer_config[index]


def rope_layer_types(config) -> tuple[str, ...]:
    """The layer types a config keeps one ``rope_parameters`` entry for (Gemma 3: ``full_attention`` and
    ``sliding_attention``), in the order of ``config.layer_types``; empty for one flat ``rope_parameters`` dict."""
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, dict):
        return ()
    labels = getattr(config, "_rope_type_labels", None) or getattr(config, "layer_types", None) or ()
    nested = {key for key in params if key in labels}
    return tuple(dict.fromkeys(t for t in (*labels, *params) if t in nested))


def layer_rope_parameters(config, layer_type: str | None = None) -> dict | None:
    """The ``rope_parameters`` of one layer type (None: that type has no RoPE), or the flat dict."""
    params = getattr(config, "rope_parameters", None)
    if rope_layer_types(config):
        if layer_type is None:
            raise LongRopeError(f"{type(config).__name__} has rope_parameters per layer type "
                                f"({', '.join(rope_layer_types(config))}): name one")
        if layer_type not in params:
            raise LongRopeError(f"{type(config).__name__} has no layer type {layer_type!r} (its layer types: "
                                f"{', '.join(rope_layer_types(config))})")
        entry = params[layer_type]
        return None if entry is None else dict(entry)
    return dict(params or {})


ROTARY_DIM_MODELS = ("codegen", "gptj")  # configs whose ``rotary_dim`` is the rotary dimension (no partial factor)

SLIDING_MARKS = ("sliding", "chunked", "local", "swa")


def is_local_layer_type(layer_type: str) -> bool:
    """Sliding-window / chunked layer types (their window lies inside the original one)."""
    return any(mark in layer_type for mark in SLIDING_MARKS)


def default_layer_type(config) -> str | None:
    """The layer type a spec scales by default on a per-layer-type config: the full (global) attention layers,
    as Gemma 3's own long-context scaling does; None for a flat config (every RoPE layer)."""
    types = [t for t in rope_layer_types(config) if layer_rope_parameters(config, t) is not None]
    if not types:
        return None
    full = [t for t in types if not is_local_layer_type(t)]
    return (full or types)[0]
