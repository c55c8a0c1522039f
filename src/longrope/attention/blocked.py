"""Causal attention as plain matrix products (bf16 where that is fast), for scoring long sequences on CPU.

PyTorch's CPU flash-attention kernel computes in float32 whatever the input dtype: on this project's reference
CPU (AVX-512 bf16, no AMX) it runs at ~150 GFLOP/s while a bf16 matmul reaches ~750. Scoring text at 8k tokens
spends most of its time there. `blocked_causal_attention` computes what transformers' *eager* bf16 attention
computes, with its rounding (bf16 products, softmax accumulated in float32 and rounded to bf16, bf16
products; only the scaling is folded into the queries), but one block of queries at a time and only against
the keys up to the block's end: memory O(block x length) per head, never O(length^2), and no work in the
masked upper triangle. The query heads that share a key/value head are stacked into one matrix, so
grouped-query attention costs no key/value copies.

`scoring_attention(model)` switches a model to it for the duration of a ``with`` block when it pays off: no
gradients (a backward pass would keep every block's probabilities, i.e. quadratic memory), a CPU model using
``sdpa`` in bf16 on a CPU whose bf16 products are fast, or in fp32 where the blocked variant measured faster
than SDPA (`blocked_attention_choice`; on an AVX2 EPYC SDPA won, 0.6x the blocked time). Anything else
(padding or sliding-window masks, a KV cache, training, other dtypes or devices)
falls back to transformers' SDPA function call by call, so the switch never changes what a model can do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from longrope.attention.interface import set_attention_implementation

NAME = "longrope_blocked"
# Rows of the score matrix per product (query heads of a group x queries): a block's scores [rows x keys] stay
# in the CPU's last-level cache at 8k keys while each product is still large enough to run near the matmul
# peak. Measured on SmolLM2 (3 heads per group) at 8k: 64 queries 0.30 s/layer, 128 0.33, 256 0.32, 512 0.55.
BLOCK_ROWS = 192


def blocked_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float,
                             block: int | None = None) -> torch.Tensor:
    """Causal attention of query [B, H, T, D] over key/value [B, Hkv, T, D] (self-attention, no cache).

    ``block`` queries per product (default: ``BLOCK_ROWS`` rows over the heads of a group). Returns
    [B, T, H, D], the layout transformers' attention functions return. Works in any dtype; the softmax is
    always accumulated in float32.
    """
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    if block is None:
        block = max(16, BLOCK_ROWS // groups)
    q = (query * scaling).unflatten(1, (kv_heads, groups))  # [B, Hkv, G, T, D]
    k_t = key.transpose(-1, -2).contiguous()  # [B, Hkv, D, T]: a prefix of columns is a strided view, no copy
    v = value.contiguous()
    out = query.new_empty((batch, length, kv_heads, groups, value.shape[-1]))
    future = torch.ones(block, block, dtype=torch.bool, device=query.device).triu_(1)
    for start in range(0, length, block):
        stop = min(start + block, length)
        rows = stop - start
        q_block = q[:, :, :, start:stop].reshape(batch, kv_heads, groups * rows, dim)
        scores = torch.matmul(q_block, k_t[..., :stop])  # [B, Hkv, G*rows, stop]
        scores.view(batch, kv_heads, groups, rows, stop)[..., start:].masked_fill_(future[:rows, :rows],
                                                                                   float("-inf"))
        probs = torch.softmax(scores, dim=-1)  # PyTorch's CPU kernel accumulates bf16 in float32
        del scores
        block_out = torch.matmul(probs, v[:, :, :stop])  # [B, Hkv, G*rows, Dv]
        out[:, start:stop] = block_out.view(batch, kv_heads, groups, rows, -1).permute(0, 3, 1, 2, 4)
    return out.flatten(2, 3)


def blocked_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, scaling: float | None = None,
                              dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function for ``attn_implementation="longrope_blocked"``.

    Takes the blocked path for plain causal self-attention without gradients; everything else (masks, a KV
    cache, non-causal modules, soft-capping, sliding windows, attention sinks) goes to transformers' SDPA
    function unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    extras = any(kwargs.get(name) for name in ("softcap", "sliding_window")) or kwargs.get("s_aux") is not None
    plain = (attention_mask is None and causal and not extras and query.shape[2] == key.shape[2]
             and not torch.is_grad_enabled() and not (dropout and module.training)
             and query.shape[1] % key.shape[1] == 0)
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    return blocked_causal_attention(query, key, value, scaling), None


def register() -> None:
    """Make ``"longrope_blocked"`` a transformers attention implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, blocked_attention_forward)
    # SDPA's mask builder returns None for a plain causal batch, which is what selects the blocked path.
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def _measured_faster(dtype: torch.dtype) -> dict:
    """Time SDPA against `blocked_causal_attention` on one CPU attention of a probe shape (~0.1 s in fp32)."""
    import time

    import torch.nn.functional as F

    heads, kv_heads, length, dim = 8, 4, 1024, 64
    q = torch.randn(1, heads, length, dim, dtype=dtype)
    k, v = (torch.randn(1, kv_heads, length, dim, dtype=dtype) for _ in range(2))

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.no_grad():
        sdpa = best(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
        blocked = best(lambda: blocked_causal_attention(q, k, v, dim**-0.5))
    return {"sdpa_seconds": sdpa, "blocked_seconds": blocked, "blocked_faster": blocked < 0.9 * sdpa}


def blocked_attention_choice(device: torch.device, dtype: torch.dtype) -> dict:
    """Whether scoring on ``device`` in ``dtype`` uses the blocked attention, and why (`longrope info
    --hardware` prints it). bf16 on a bf16-fast CPU: yes (SDPA's CPU kernel computes in float32 there; measured
    1.95x the naive call at 8k, BENCHMARKS.md). fp32 on a CPU: SDPA and the blocked variant are timed once per
    machine and the faster kept. GPUs use SDPA / flash attention; a bf16 model on a bf16-slow CPU keeps SDPA,
    whose kernel runs in float32."""
    from longrope.hardware import cached_measurement, cpu_speeds, dtype_name

    if device.type != "cpu":
        return {"used": False, "why": f"{device.type}: SDPA (flash attention where the card has it)"}
    if dtype == torch.bfloat16:
        fast = cpu_speeds().bf16_fast
        return {"used": fast, "why": "bf16 products are fast on this CPU" if fast else
                "bf16 products are slow on this CPU; SDPA computes in float32"}
    if dtype != torch.float32:
        return {"used": False, "why": f"{dtype_name(dtype)} on a CPU: SDPA"}
    result, _ = cached_measurement("blocked-attention-fp32", lambda: _measured_faster(torch.float32))
    used = bool(result.get("blocked_faster"))
    return {"used": used, "why": f"measured in fp32: blocked {result.get('blocked_seconds', 0):.3f} s vs SDPA "
            f"{result.get('sdpa_seconds', 0):.3f} s"}


def pays_off(model: nn.Module) -> bool:
    """Whether `scoring_attention` would switch ``model``: sdpa, no gradients, and `blocked_attention_choice`
    says the blocked path is faster for its device and dtype."""
    config = getattr(model, "config", None)
    if config is None or torch.is_grad_enabled() or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    param = next(model.parameters(), None)
    return param is not None and bool(blocked_attention_choice(param.device, param.dtype)["used"])


@contextlib.contextmanager
def scoring_attention(model: nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Use `blocked_causal_attention` inside the block when it `pays_off`; yields whether it switched."""
    if not (enabled and pays_off(model)):
        yield False
        return
    register()
    set_attention_implementation(model, NAME)
    try:
        yield True
    finally:
        set_attention_implementation(model, "sdpa")
