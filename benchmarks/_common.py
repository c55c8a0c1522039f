"""Shared by the benchmark scripts: the machine's matmul peak, model FLOPs, and a timer."""

from __future__ import annotations

import time

import torch


def cpu_flags() -> str:
    """The CPU model, the SIMD flags that matter for bf16, torch and its threads (`longrope.hardware`)."""
    from longrope.hardware import cpu_summary

    return cpu_summary()


def best_time(fn, repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(dtype: torch.dtype = torch.bfloat16, size: int = 2048, repeats: int = 5) -> float:
    """Achieved FLOP/s of a large square matmul in ``dtype``: this machine's practical peak."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    seconds = best_time(lambda: torch.matmul(a, b), repeats=repeats)
    return 2 * size**3 / seconds


def forward_flops(config, tokens: int, with_head: bool = True) -> float:
    """Model FLOPs of one causal forward over ``tokens`` tokens (multiply-add = 2 FLOPs).

    Matmuls: 2 * tokens * (weights of q,k,v,o, MLP[, head]); attention: QK^T and AV over the causal half,
    2 * tokens^2 * heads * head_dim per layer. Embedding lookups and norms are not counted.
    """
    h = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    hd = getattr(config, "head_dim", None) or h // heads
    inter = config.intermediate_size
    layers = config.num_hidden_layers
    per_layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * inter
    matmul = 2 * tokens * (layers * per_layer + (config.vocab_size * h if with_head else 0))
    attention = layers * 2 * tokens * tokens * heads * hd
    return float(matmul + attention)
