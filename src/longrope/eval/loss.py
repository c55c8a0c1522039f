"""Per-token negative log-likelihood without a [tokens x vocab] logits tensor.

The decoder runs once; the output head and the cross-entropy are applied to ``chunk`` positions at a time, so
peak memory for the head is O(chunk x vocab) instead of O(length x vocab). Everything that scores text
(perplexity, search fitness, fine-tuning loss) goes through `token_nll`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_CHUNK = 1024


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

    Logits are upcast to float32 per chunk so bf16 models still get an exact-enough loss.
    """
    out = torch.empty(labels.shape, dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[1], chunk):
        stop = min(start + chunk, hidden.shape[1])
        logits = head(hidden[:, start:stop]).float()  # [B, c, V]
        if logit_scale is not None:
            logits = logits * logit_scale
        out[:, start:stop] = F.cross_entropy(
            logits.transpose(1, 2), labels[:, start:stop], reduction="none"
        )
    return out


def token_nll(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """NLL [B, T-1] of each token given the ones before it (position t scores input_ids[:, t+1])."""
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return hidden_nll(head, hidden[:, :-1], input_ids[:, 1:], chunk, getattr(model, "logit_scale", None))
