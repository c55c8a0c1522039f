"""STRING's relative-position map (arXiv 2410.18745): large distances reuse well-trained ones."""

from __future__ import annotations

import torch


def string_relative_positions(query_positions: torch.Tensor, key_positions: torch.Tensor, shift: int,
                              local_window: int) -> torch.Tensor:
    """Mapped distance for every (query, key) pair: r = q - k if r < S else r - S + W.

    Shapes: query_positions [Tq], key_positions [Tk] -> [Tq, Tk] (int64). Negative r (future keys) is
    returned unchanged; causal masking is the caller's business.
    """
    r = query_positions[:, None].long() - key_positions[None, :].long()
    return torch.where(r >= shift, r - shift + local_window, r)
