"""`inplace_layers`: the in-place RMSNorm / MLP forwards give transformers' numbers bit for bit, and switch
nothing where they must not."""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from longrope import loss
from longrope.inplace_layers import inplace_layers
from longrope.loss import token_nll

SHAPE = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)


def _model(kind: str, dtype: torch.dtype, act: str = "silu"):
    torch.manual_seed(0)
    config = (LlamaConfig if kind == "llama" else Qwen2Config)(**SHAPE, hidden_act=act)
    model = (LlamaForCausalLM if kind == "llama" else Qwen2ForCausalLM)(config).eval().to(dtype)
    for p in model.parameters():  # norms start at 1: make their weights matter
        p.data += 0.05 * torch.randn_like(p.data)
    return model


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_the_inplace_forwards_give_transformers_logits_bit_for_bit(kind, dtype, act):
    model = _model(kind, dtype, act)
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids).logits
        with inplace_layers(model) as switched:
            hidden_in = model.model.embed_tokens(ids)
            kept = hidden_in.clone()
            model.model.layers[0].input_layernorm(hidden_in)
            ours = model(ids).logits
    assert switched == 2 * 3 + 1  # two norms and an MLP in each of 2 layers, the final norm
    assert torch.equal(hidden_in, kept)  # the norm's input is never written
    assert torch.equal(ours, reference)
    assert all("forward" not in vars(m) for m in model.modules())  # restored


def test_token_nll_is_unchanged_by_the_inplace_layers(monkeypatch):
    model = _model("llama", torch.bfloat16)
    ids = torch.randint(0, SHAPE["vocab_size"], (1, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = token_nll(model, ids)
        monkeypatch.setattr(loss, "inplace_layers", lambda model: contextlib.nullcontext(0))
        reference = token_nll(model, ids)
    assert torch.equal(ours, reference)


def test_nothing_is_switched_with_gradients_or_when_disabled():
    model = _model("llama", torch.float32)
    with inplace_layers(model) as switched:
        assert switched == 0
        ids = torch.randint(0, SHAPE["vocab_size"], (1, 16))
        model(ids).logits.sum().backward()  # in-place activations would break this
    with torch.no_grad(), inplace_layers(model, enabled=False) as switched:
        assert switched == 0


def test_a_forward_someone_else_set_on_an_instance_is_left_alone():
    model = _model("llama", torch.float32)
    norm = model.model.norm
    norm.forward = lambda x: x * 0
    with torch.no_grad(), inplace_layers(model) as switched:
        assert switched == 2 * 3
        assert norm.forward(torch.ones(2)).sum() == 0
    assert "forward" in vars(norm)
