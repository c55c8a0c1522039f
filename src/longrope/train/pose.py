"""PoSE position ids: a short training window whose positions skip ahead so it spans the target length.

PoSE (Positional Skip-wisE training, Zhu et al. 2023, arXiv 2309.10400) fine-tunes with windows of ``N`` tokens of
contiguous text, far fewer than the target length ``L'``. The window is cut into ``chunks`` pieces of random
lengths; piece ``i`` keeps its tokens' consecutive positions but is shifted by a skip bias ``u_i``, with
``u_0 = 0`` and ``u_i`` drawn uniformly from ``[u_{i-1}, L' - N]`` (the paper's nested draw). Positions therefore
stay increasing, the last one is at most ``L' - 1``, and over many windows the relative distances seen cover
``[0, L')`` while attention runs over only ``N`` tokens. The RoPE spec is applied to the model separately, so
this composes with any method (PI, NTK, YaRN, LongRoPE, ...).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from longrope.errors import LongRopeError


def check_pose(window: int, target: int, chunks: int) -> None:
    """Raise `LongRopeError` unless ``window`` tokens in ``chunks`` pieces can skip through ``target`` positions."""
    if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 2:
        # One chunk has no skip: its positions never pass the window, so the target range is never reached.
        raise LongRopeError(f"PoSE: chunks must be an integer >= 2 (one chunk never skips), got {chunks!r}")
    if not isinstance(window, int) or isinstance(window, bool) or window < chunks:
        raise LongRopeError(f"PoSE: the window ({window!r} tokens) must hold at least one token per chunk ({chunks})")
    if not isinstance(target, int) or isinstance(target, bool) or target <= window:
        raise LongRopeError(
            f"PoSE: the target length ({target!r}) must be larger than the training window ({window}); at or "
            "below it, train at the full length without PoSE"
        )


def pose_position_ids(window: int, target: int, chunks: int, generator: torch.Generator) -> torch.Tensor:
    """Position ids [window] of one PoSE window: increasing, starting at 0, all below ``target``.

    Chunk lengths are a uniformly random split of ``window`` into ``chunks`` non-empty pieces; the skip biases
    follow the module docstring. Deterministic given ``generator``'s state.
    """
    check_pose(window, target, chunks)
    # chunks-1 distinct cut points in 1..window-1 give chunks non-empty pieces.
    cuts = (torch.randperm(window - 1, generator=generator)[: chunks - 1] + 1).sort().values
    starts = torch.cat([torch.zeros(1, dtype=torch.long), cuts])  # [chunks]
    budget = target - window  # total skip the window can take and still end below target
    bias = torch.zeros(chunks, dtype=torch.long)
    for i in range(1, chunks):
        low = int(bias[i - 1])
        bias[i] = int(torch.randint(low, budget + 1, (1,), generator=generator))
    chunk_of = torch.bucketize(torch.arange(window), starts, right=True) - 1  # [window] chunk index per token
    return torch.arange(window) + bias[chunk_of]


def sequence_generator(seed: int, index: int) -> torch.Generator:
    """The generator of training sequence ``index``: its positions are a pure function of (seed, index)."""
    # Resume and multi-process runs then need only the sequence index, as for the packed data. Torch's CPU
    # generator keeps only the low 32 bits of a seed, so seed and index are mixed into 32 bits (the indices of one
    # seed never collide; the large multiplier keeps nearby seeds apart).
    return torch.Generator().manual_seed((int(index) + int(seed) * 0x9E3779B1) % 2**32)


def pose_batch(window: int, target: int, chunks: int, seed: int, indices: Iterable[int]) -> torch.Tensor:
    """Position ids [B, window] for the training sequences ``indices``, one independent draw per sequence."""
    rows = [pose_position_ids(window, target, chunks, sequence_generator(seed, k)) for k in indices]
    return torch.stack(rows)


__all__ = ["check_pose", "pose_batch", "pose_position_ids", "sequence_generator"]
