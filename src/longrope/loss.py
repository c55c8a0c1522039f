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
    if not isinstance(decoder, nn.Module):  # e.g. Llama 4's text model: prefix 'language_model', kept as 'model'
        decoder = getattr(model, "model", None)
    if head is None or not isinstance(decoder, nn.Module):
        raise TypeError(f"{type(model).__name__} is not a causal LM with an output head")
    return decoder, head


# How a causal LM turns its head's output into logits: (form, value). Measured per model by `head_form`.
HEAD_FORMS = ("identity", "scale", "divide", "softcap")


def _apply_form(logits: torch.Tensor, form: tuple[str, float] | None) -> torch.Tensor:
    if form is None or form[0] == "identity":
        return logits
    kind, value = form
    if kind == "scale":
        return logits * value
    if kind == "divide":
        return logits / value
    return torch.tanh(logits / value) * value  # softcap


def _candidates(model: nn.Module) -> list[tuple[str, float]]:
    config = getattr(model, "config", None)
    text = getattr(config, "get_text_config", lambda: config)() if config is not None else None
    found: list[tuple[str, float]] = [("identity", 1.0)]

    def number(value) -> float | None:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value else None

    decoder = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    for owner, name, kinds in ((model, "logit_scale", ("scale",)),  # Cohere
                               (text, "logits_scaling", ("divide", "scale")),  # Granite / HyperCLOVA X, MiniCPM3
                               (decoder, "lm_head_multiplier", ("scale",)),  # Falcon-H1
                               (text, "final_logit_softcapping", ("softcap",)),  # Gemma 2, Gemma 3n, ...
                               (text, "logits_soft_cap", ("softcap",))):  # RecurrentGemma
        value = number(getattr(owner, name, None)) if owner is not None else None
        if value is not None:
            found += [(kind, value) for kind in kinds]
    return found


def head_form(model: nn.Module, input_ids: torch.Tensor) -> tuple[str, float]:
    """How ``model`` makes its logits from its head's output (scale, softcap, ...), measured once on the first
    tokens of ``input_ids`` against the model's own forward and kept on the model; `LongRopeError` if no known
    form reproduces them (the chunked loss would be wrong)."""
    cached = getattr(model, "_longrope_head_form", None)
    if cached is not None and cached[0] is getattr(model, "config", None):
        return cached[1]
    decoder, head = decoder_and_head(model)
    ids = input_ids[:, : min(8, input_ids.shape[1])]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model(input_ids=ids, use_cache=False).logits.float()
            raw = head(decoder(input_ids=ids, use_cache=False).last_hidden_state).float()
    finally:
        model.train(was_training)
    tolerance = 8 * torch.finfo(raw.dtype if raw.dtype.is_floating_point else torch.float32).eps
    tolerance = max(tolerance, 8 * torch.finfo(next(head.parameters()).dtype).eps) * (1 + float(reference.abs().max()))
    errors = [(float((_apply_form(raw, form) - reference).abs().max()), form) for form in _candidates(model)]
    error, form = min(errors, key=lambda item: item[0])
    if not error <= tolerance:
        from longrope.errors import LongRopeError

        raise LongRopeError(
            f"{type(model).__name__}'s logits are not its output head applied to the decoder's last hidden state "
            f"in a form longrope knows ({', '.join(HEAD_FORMS)}; closest differs by {error:.3g}): its chunked "
            "loss would be wrong")
    model._longrope_head_form = (getattr(model, "config", None), form)
    return form


def hidden_nll(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int = DEFAULT_CHUNK,
               logit_scale: float | None = None, form: tuple[str, float] | None = None) -> torch.Tensor:
    """NLL [B, T] of ``labels`` [B, T] given final hidden states [B, T, H], computed ``chunk`` positions at a time.

    Logits are upcast to float32 so bf16 models still get an exact-enough loss. The NLL is
    ``logsumexp(logits) - logits[label]``: the same number as cross-entropy without writing a log-softmax of
    [B, c, V] (or transposing the logits for it), which was a third of the head's time. The float32 passes of
    the logsumexp run `LOGSUMEXP_ROWS` positions at a time, so they stay in cache: half the head's time at 8k.
    ``form`` (`head_form`): what the model does to its head's output (Cohere's scale, Gemma 2's softcap, ...);
    ``logit_scale`` is the same as ``form=("scale", logit_scale)``.
    """
    if form is None and logit_scale is not None:
        form = ("scale", float(logit_scale))
    if form is not None and form[0] == "identity":
        form = None
    out = torch.empty(labels.shape, dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[1], chunk):
        stop = min(start + chunk, hidden.shape[1])
        logits = head(hidden[:, start:stop])  # [B, c, V], the model's dtype
        target = _apply_form(logits.gather(-1, labels[:, start:stop, None]).squeeze(-1).float(), form)
        for row in range(start, stop, LOGSUMEXP_ROWS):
            end = min(row + LOGSUMEXP_ROWS, stop)
            rows = _apply_form(logits[:, row - start : end - start].float(), form)
            out[:, row:end] = torch.logsumexp(rows, dim=-1) - target[:, row - start : end - start]
    return out


def token_nll(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              chunk: int = DEFAULT_CHUNK, fast_attention: bool = True) -> torch.Tensor:
    """NLL [B, T-1] of each token given the ones before it (position t scores input_ids[:, t+1]).

    ``fast_attention``: allow `longrope.attention.blocked.scoring_attention` (it only switches a bf16 CPU model
    under ``torch.no_grad()``; False keeps the model's own attention).
    """
    decoder, head = decoder_and_head(model)
    form = head_form(model, input_ids)
    with scoring_attention(model, enabled=fast_attention), inplace_layers(model):
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return hidden_nll(head, hidden[:, :-1], input_ids[:, 1:], chunk, form=form)
