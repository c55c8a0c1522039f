"""Greedy decoding with a KV cache, for the retrieval tasks (passkey, needle, RULER).

A small manual loop rather than ``model.generate``: it is deterministic, prints nothing, computes logits only
for the last position (never [prompt x vocab]), and runs inside `longrope.attention.sequence_length` so
length-dependent scalings (LongRoPE short/long, dynamic NTK) choose their tables once, for prompt + answer.
"""

from __future__ import annotations

import torch
from torch import nn

from longrope.attention import patch


@torch.no_grad()
def greedy_generate(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int = 10,
                    eos_token_id: int | None = None, step_logits: list | None = None) -> list[int]:
    """Greedy continuation (token ids, at most ``max_new_tokens``) of a 1-D or [1, T] prompt; each step's
    logits (float32, [vocab]) are appended to ``step_logits`` when a list is given."""
    ids = torch.as_tensor(input_ids).reshape(1, -1).long()
    device = next(model.parameters()).device
    ids = ids.to(device)
    out: list[int] = []
    with patch.sequence_length(model, ids.shape[1] + max_new_tokens):
        result = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = result.cache  # transformers 5.24+: `cache`, formerly `past_key_values` (removed in 5.40)
        position = ids.shape[1]
        for step in range(max_new_tokens):
            if step_logits is not None:
                step_logits.append(result.logits[0, -1].float().cpu())
            token = int(result.logits[0, -1].float().argmax())
            out.append(token)
            if eos_token_id is not None and token == eos_token_id or step == max_new_tokens - 1:
                break
            next_ids = torch.tensor([[token]], device=device)
            result = model(input_ids=next_ids, cache=cache, use_cache=True,
                           position_ids=torch.tensor([[position]], device=device), logits_to_keep=1)
            cache = result.cache
            position += 1
    return out
