"""STRING at inference (arXiv 2410.18745): attention in which long distances reuse well-trained ones.

STRING maps the relative distance ``r = query position - key position`` to ``r`` when ``r < S`` and to
``r - S + W`` otherwise. RoPE makes the score of a (query, key) pair depend only on the rotation between them, so
the shifted score is the ordinary one with the (already rotated) query turned further by the constant angle of
position ``W - S`` (negative): ``q_shift = R((W - S) * inv_freq) q``. Per query chunk we compute one score matrix
whose entries come from ``q_shift . k`` where ``r >= S`` and from ``q . k`` elsewhere, then one softmax: exact,
and memory O(chunk x keys) per head, never O(T^2).

The function has transformers' attention-interface signature and is registered as ``"longrope_string"`` in
``AttentionInterface`` (and ``sdpa_mask`` as its mask builder in ``AttentionMaskInterface``, so padding masks are
built as booleans and a plain causal mask is skipped altogether). `install_string_attention` switches a model to
it and stores STRING's parameters on each attention module; `uninstall_string_attention` switches back.
`longrope.attention.apply(model, StringSpec(...))` calls both for you.

Positions: queries are taken to be the last ``Tq`` of the ``Tk`` keys (key slot ``j`` is ``Tk - Tq + i - j``
tokens before query ``i``). That holds for prefill, chunked prefill and decoding with transformers' dynamic caches
(full or sliding-window), with left padding and with packed sequences (masked across documents); it does not hold
for pre-allocated static caches (``cache_implementation="static"``), which are not supported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from longrope.attention.interface import attention_modules, set_attention_implementation
from longrope.attention.rotary import ScaledRotaryEmbedding
from longrope.errors import LongRopeError
from longrope.rope import RopeGeometry, StringSpec

NAME = "longrope_string"
DEFAULT_CHUNK_SIZE = 512
_PARAMS = "_longrope_string"
_PREVIOUS = "_longrope_string_previous_attn"


@dataclass
class StringParams:
    """What the attention function needs, stored on every attention module of a patched model.

    shift, local_window: S and W. rotary: the model's `ScaledRotaryEmbedding` (its current tables give the
    frequencies the keys were rotated with). chunk_size: queries per score matrix.
    """

    shift: int
    local_window: int
    rotary: nn.Module
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """Inverse frequencies [d/2] (float32) of the table the rotary module chose for the current sequence."""
        rotary = self.rotary
        seq_len = rotary.sequence_length or rotary.length_hint or rotary.geometry.original_window
        inv_freq, _ = rotary.tables(seq_len, device)
        return inv_freq[0]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def shift_query(query: torch.Tensor, inv_freq: torch.Tensor, offset: int) -> torch.Tensor:
    """Turn an already rotated query [..., D] by the RoPE angle of position ``offset`` (no attention factor).

    Only the first ``2 * len(inv_freq)`` dimensions are rotary (Phi-3's partial rotary); the rest pass through.
    Pairs are (i, i + d/2), the rotate-half layout of Llama, Mistral, Qwen2 and Phi-3.
    """
    rotary_dim = 2 * inv_freq.shape[-1]
    angle = offset * inv_freq.to(device=query.device, dtype=torch.float64)
    angle = torch.cat((angle, angle))
    cos, sin = angle.cos().float(), angle.sin().float()
    rot = query[..., :rotary_dim].float()
    turned = (rot * cos + _rotate_half(rot) * sin).to(query.dtype)
    if rotary_dim == query.shape[-1]:
        return turned
    return torch.cat((turned, query[..., rotary_dim:]), dim=-1)


def _chunk_mask(attention_mask: torch.Tensor, rows: slice, keys: int, kv_heads: int) -> torch.Tensor:
    """The mask rows of one query chunk, shaped to broadcast against scores [B, Hkv, G, c, keys]."""
    mask = attention_mask[..., rows, :keys]
    if mask.shape[1] == 1:
        return mask.unsqueeze(2)
    return mask.unflatten(1, (kv_heads, -1))


def string_attention_core(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, scaling: float, shift: int, local_window: int,
                          inv_freq: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, dropout: float = 0.0,
                          training: bool = False) -> torch.Tensor:
    """Causal STRING attention. query [B, H, Tq, D] and key [B, Hkv, Tk, D] already rotated; value [B, Hkv, Tk, Dv].

    attention_mask: None (plain causal), a boolean mask (True = attend) or an additive float mask, broadcastable
    to [B, H, Tq, Tk]. Keys after a query's own slot are never attended. Returns [B, Tq, H, Dv].
    """
    batch, heads, tq, _ = query.shape
    kv_heads, tk = key.shape[1], key.shape[2]
    if heads % kv_heads:
        raise LongRopeError(f"{heads} query heads are not a multiple of {kv_heads} key/value heads")
    if tq > tk:
        raise LongRopeError(f"STRING attention got {tq} queries but only {tk} keys")
    groups = heads // kv_heads
    offset = tk - tq  # key slot of query i is offset + i
    q = query.unflatten(1, (kv_heads, groups))  # [B, Hkv, G, Tq, D]
    q_shift = shift_query(q, inv_freq, local_window - shift)
    k_t = key.unsqueeze(2).transpose(-1, -2)  # [B, Hkv, 1, D, Tk]
    v = value.unsqueeze(2)  # [B, Hkv, 1, Tk, Dv]
    lowest = torch.finfo(torch.float32).min
    outputs = []
    for c0 in range(0, tq, chunk_size):
        c1 = min(c0 + chunk_size, tq)
        a0, a1 = offset + c0, offset + c1  # key slots of the chunk's first query and one past its last
        width = c1 - c0
        shifted_end = max(a1 - shift, 0)  # keys [0, shifted_end) are >= S away from some query of the chunk
        window_start = max(a0 - shift + 1, 0)  # keys [window_start, a1) are < S away from some query
        scores = query.new_empty((batch, kv_heads, groups, width, a1), dtype=torch.float32)
        if shifted_end:
            scores[..., :shifted_end] = torch.matmul(q_shift[..., c0:c1, :], k_t[..., :shifted_end]).float()
        window = torch.matmul(q[..., c0:c1, :], k_t[..., window_start:a1]).float()
        overlap = shifted_end - window_start  # < chunk size: keys on both sides of distance S
        if overlap > 0:
            distance = (torch.arange(a0, a1, device=query.device)[:, None]
                        - torch.arange(window_start, shifted_end, device=query.device)[None, :])
            window[..., :overlap] = torch.where(distance >= shift, scores[..., window_start:shifted_end],
                                                window[..., :overlap])
        scores[..., window_start:] = window
        del window
        scores.mul_(scaling)
        if attention_mask is None:
            future = torch.ones(width, width, dtype=torch.bool, device=query.device).triu(1)
            scores[..., a1 - width:].masked_fill_(future, lowest)
        else:
            mask = _chunk_mask(attention_mask, slice(c0, c1), a1, kv_heads)
            if mask.dtype == torch.bool:
                scores.masked_fill_(~mask, lowest)
            else:
                scores.add_(mask.float()).clamp_(min=lowest)
        probs = torch.softmax(scores, dim=-1).to(value.dtype)
        del scores
        if dropout and training:
            probs = nn.functional.dropout(probs, p=dropout, training=True)
        outputs.append(torch.matmul(probs, v[..., :a1, :]))  # [B, Hkv, G, c, Dv]
    out = torch.cat(outputs, dim=-2) if len(outputs) > 1 else outputs[0]
    return out.flatten(1, 2).transpose(1, 2).contiguous()  # [B, Tq, H, Dv]


def _flash_string_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float,
                            shift: int, local_window: int, inv_freq: torch.Tensor) -> torch.Tensor | None:
    """UNTESTED (no GPU here): STRING with flash-attn's kernels, two passes merged by log-sum-exp.

    Used only on CUDA, without a mask (no padding), when ``flash_attn`` is importable; returns None otherwise so
    the caller falls back to `string_attention_core`. Window pass: keys at distance < S (``window_size=(S-1, 0)``).
    Shifted pass: shifted queries of slots >= S against keys ``[0, Tk - S)``, causal with flash-attn's bottom-right
    alignment, so query slot a sees keys j <= a - S.
    """
    if query.device.type != "cuda" or query.dtype not in (torch.float16, torch.bfloat16):
        return None
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    tq, tk = query.shape[2], key.shape[2]
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)  # [B, T, H, D]
    out, lse, _ = flash_attn_func(q, k, v, softmax_scale=scaling, causal=True, window_size=(shift - 1, 0),
                                  return_attn_probs=True)
    first = max(shift - (tk - tq), 0)  # first query whose slot is >= S
    if first >= tq:
        return out
    q_shift = shift_query(query, inv_freq, local_window - shift).transpose(1, 2)[:, first:]
    out2, lse2, _ = flash_attn_func(q_shift, k[:, : tk - shift], v[:, : tk - shift], softmax_scale=scaling,
                                    causal=True, return_attn_probs=True)
    lse1 = lse[..., first:]  # [B, H, n]
    merged = torch.logaddexp(lse1, lse2)
    w1 = torch.exp(lse1 - merged).transpose(1, 2).unsqueeze(-1)
    w2 = torch.exp(lse2 - merged).transpose(1, 2).unsqueeze(-1)
    tail = (out[:, first:].float() * w1 + out2.float() * w2).to(out.dtype)
    return torch.cat((out[:, :first], tail), dim=1)


def string_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                             **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function for ``attn_implementation="longrope_string"``; returns (output, None)."""
    params: StringParams | None = getattr(module, _PARAMS, None)
    if params is None:
        raise LongRopeError(
            f"{type(module).__name__} runs with attn_implementation={NAME!r} but has no STRING parameters; "
            "use longrope.attention.apply(model, StringSpec(...))"
        )
    inv_freq = params.inv_freq(query.device)
    if attention_mask is None and not (dropout and module.training):
        out = _flash_string_attention(query, key, value, scaling, params.shift, params.local_window, inv_freq)
        if out is not None:
            return out, None
    out = string_attention_core(query, key, value, attention_mask, scaling, params.shift, params.local_window,
                                inv_freq, params.chunk_size, dropout, module.training)
    return out, None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, string_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def install_string_attention(model: nn.Module, spec: StringSpec, geometry: RopeGeometry,
                             chunk_size: int | None = None) -> nn.Module:
    """Switch ``model`` to STRING attention with ``spec``'s S and W (resolved against ``geometry``).

    Call after the rotary module has been swapped for a `ScaledRotaryEmbedding` (``longrope.attention.apply`` does
    both). The previous attention implementation is remembered for `uninstall_string_attention`.
    """
    if not isinstance(spec, StringSpec):
        raise LongRopeError(f"install_string_attention needs a StringSpec, got {type(spec).__name__}")
    shift, local_window = spec.resolved(geometry.original_window)
    rotaries = [m for m in model.modules() if isinstance(m, ScaledRotaryEmbedding)]
    modules = attention_modules(model)
    if not rotaries or not modules or getattr(model, "config", None) is None:
        raise LongRopeError(
            f"{type(model).__name__}: STRING needs a RoPE model whose rotary module was patched by "
            "longrope.attention.apply(model, StringSpec(...)) and whose attention uses transformers' AttentionInterface"
        )
    n_hat = getattr(spec.base, "n_hat", 0)
    if n_hat > local_window:
        warnings.warn(
            f"STRING with local window W={local_window} < n_hat={n_hat}: shifted queries land on positions that "
            "LongRoPE would rotate with unscaled frequencies; they use the scaled ones", stacklevel=2)
    size = chunk_size or DEFAULT_CHUNK_SIZE
    if size < 1:
        raise LongRopeError(f"STRING chunk size must be >= 1, got {size}")
    _register()
    params = StringParams(shift, local_window, rotaries[0], size)
    for m in modules:
        setattr(m, _PARAMS, params)
    if not hasattr(model, _PREVIOUS):
        setattr(model, _PREVIOUS, model.config._attn_implementation)
    set_attention_implementation(model, NAME)
    return model


def uninstall_string_attention(model: nn.Module) -> nn.Module:
    """Undo `install_string_attention` (a no-op on a model without it)."""
    for m in model.modules():
        if hasattr(m, _PARAMS):
            delattr(m, _PARAMS)
    previous = getattr(model, _PREVIOUS, None)
    if previous is not None:
        set_attention_implementation(model, previous)
        delattr(model, _PREVIOUS)
    return model


def set_chunk_size(model: nn.Module, chunk_size: int) -> None:
    """Queries per score matrix in STRING prefill (memory O(chunk_size x keys) per head)."""
    if chunk_size < 1:
        raise LongRopeError(f"STRING chunk size must be >= 1, got {chunk_size}")
    for m in model.modules():
        params = getattr(m, _PARAMS, None)
        if params is not None:
            params.chunk_size = int(chunk_size)


def string_parameters(model: nn.Module) -> tuple[int, int] | None:
    """(S, W) of the STRING attention installed on ``model``, or None."""
    for m in model.modules():
        params = getattr(m, _PARAMS, None)
        if params is not None:
            return params.shift, params.local_window
    return None
