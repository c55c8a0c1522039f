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
    def from_config(cls, config) -> RopeGeometry:
        """Read the geometry from a transformers config (``rope_parameters`` API of transformers 5).

        When the config already carries a scaling with ``original_max_position_embeddings`` (e.g. Phi-3 128k),
        that is the original window; otherwise ``max_position_embeddings`` is.
        """
        params = dict(getattr(config, "rope_parameters", None) or {})
        base = params.get("rope_theta", getattr(config, "rope_theta", None))
        if base is None:
            raise LongRopeError(
                f"{type(config).__name__} has no rope_theta / rope_parameters: this model does not use rotary "
                "position embeddings"
            )
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        partial = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0)
        original = (
            params.get("original_max_position_embeddings")
            or getattr(config, "original_max_position_embeddings", None)
            or config.max_position_embeddings
        )
        return cls(dim=int(head_dim * partial), base=float(base), original_window=int(original))
