"""Per-token negative log-likelihood without a [tokens x vocab] logits tensor.

The decoder runs once; the output head and the cross-entropy are applied to ``chunk`` positions at a time, so
peak memory for the head is O(chunk x vocab) instead of O(length x vocab). Everything that scores text
(perplexity, search fitness, fine-tuning loss) goes through `token_nll` or `hidden_nll`. It sits just above
`longrope.attention` and below every area (eval, search, train), so none of them imports another for its loss.

Without gradients, a bf16 model on CPU runs its attention as bf16 matrix products
(`longrope.attention.blocked`), about twice as fast there as PyTorch's SDPA kernel, which computes in float32,
and its RMSNorm and MLP layers in place (`longrope.inplace_layers`, bit for bit the same numbers).
"""

from __future__ import annotations

import torch
from torch import nn

from longrope.attention.blocked import scoring_attention
from longrope.inplace_layers import inplace_layers

DEFAULT_CHUNK = 1024
# Positions per float32 logsumexp: [32 x 49k vocab] floats (6 MB) stay in cache; measured on SmolLM2's head at
# 8k: 8 rows 0.88 s, 16 0.87, 32 0.85, 64 0.91, a whole 1024-position chunk 1.66 s (head matmul alone 0.70).
LOGSUMEXP_ROWS = 32


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The base decoder (returns hidden states) and the output head of a causal LM."""
    head = model.get_output_embeddings()
    decoder = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if head is None or decoder is None:
        raise TypeError(f"{type(model).__name__} is not a causal LM with an output head")
    return decoder, head


def hidden_nll(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int = DEFAULT_CHUNK,
               logit_scale: float | None = None) -> torch.Tensor:
    """NLL [B, T] of ``labels`` [B, T] given final hidden states [B, T, H], computed ``chunk`` positions at a time.

    Logits are upcast to float32 so bf16 models still get an exact-enough loss. The NLL is
    ``logsumexp(logits) - logits[label]``: the same number as cross-entropy without writing a log-softmax of
    [B, c, V] (or transposing the logits for it), which was a third of the head's time. The float32 passes of
    the logsumexp run `LOGSUMEXP_ROWS` positions at a time, so they stay in cache: half the head's time at 8k.
    """
    out = torch.empty(labels.shape, dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[1], chunk):
        stop = min(start + chunk, hidden.shape[1])
        logits = head(hidden[:, start:stop])  # [B, c, V], the model's dtype
        target = logits.gather(-1, labels[:, start:stop, None]).squeeze(-1).float()
        if logit_scale is not None:
            target = target * logit_scale
        for row in range(start, stop, LOGSUMEXP_ROWS):
            end = min(row + LOGSUMEXP_ROWS, stop)
            rows = logits[:, row - start : end - start].float()
            if logit_scale is not None:
                rows = rows * logit_scale
            out[:, row:end] = torch.logsumexp(rows, dim=-1) - target[:, row - start : end - start]
    return out


def token_nll(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              chunk: int = DEFAULT_CHUNK, fast_attention: bool = True) -> torch.Tensor:
    """NLL [B, T-1] of each token given the ones before it (position t scores input_ids[:, t+1]).

    ``fast_attention``: allow `longrope.attention.blocked.scoring_attention` (it only switches a bf16 CPU model
    under ``torch.no_grad()``; False keeps the model's own attention).
    """
    decoder, head = decoder_and_head(model)
    with scoring_attention(model, enabled=fast_attention), inplace_layers(model):
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return hidden_nll(head, hidden[:, :-1], input_ids[:, 1:], chunk, getattr(model, "logit_scale", None))
