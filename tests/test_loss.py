"""`hidden_nll` against the obvious computation: cross-entropy of the full (scaled) float32 logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from longrope import loss
from longrope.loss import hidden_nll


@pytest.mark.parametrize("logit_scale", [None, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hidden_nll_is_cross_entropy_over_any_chunk_and_row_split(monkeypatch, logit_scale, dtype):
    monkeypatch.setattr(loss, "LOGSUMEXP_ROWS", 7)  # rows that split chunks unevenly
    torch.manual_seed(0)
    head = nn.Linear(32, 300, bias=False).to(dtype)
    hidden = torch.randn(2, 50, 32).to(dtype).requires_grad_()
    labels = torch.randint(0, 300, (2, 50))
    logits = head(hidden).float() * (1.0 if logit_scale is None else logit_scale)
    reference = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(2, 50)
    ours = hidden_nll(head, hidden, labels, chunk=13, logit_scale=logit_scale)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    (grad_ours,) = torch.autograd.grad(ours.sum(), hidden)
    (grad_reference,) = torch.autograd.grad(reference.sum(), hidden)
    # bf16 gradients are rounded at every step of the backward pass, in a different order from the reference's
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=5e-2, atol=1e-4)
    torch.testing.assert_close(grad_ours.float(), grad_reference.float(), **tolerance)
