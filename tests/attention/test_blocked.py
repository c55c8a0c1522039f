"""Blocked bf16 attention (`longrope.attention.blocked`) against SDPA, transformers' eager attention and float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from factories import tiny_model

from longrope.attention.blocked import (
    NAME,
    blocked_causal_attention,
    register,
    scoring_attention,
    set_attention_implementation,
)
from longrope.loss import token_nll


@pytest.fixture(autouse=True)
def bf16_fast_cpu(monkeypatch):
    """These tests check the blocked path itself, so they run as on a bf16-fast CPU (where it is chosen) whatever
    this machine's measurement says; `test_the_choice_follows_the_measurement` checks the choice."""
    from longrope import hardware

    monkeypatch.setattr(hardware, "cpu_speeds", lambda: hardware.CpuSpeeds(fp32=100.0, bf16=400.0, threads=2))


def test_the_choice_follows_the_measurement(monkeypatch):
    from longrope import hardware
    from longrope.attention import blocked

    cpu = torch.device("cpu")
    assert blocked.blocked_attention_choice(cpu, torch.bfloat16)["used"]
    monkeypatch.setattr(hardware, "cpu_speeds", lambda: hardware.CpuSpeeds(fp32=42.0, bf16=0.7, threads=2))
    assert not blocked.blocked_attention_choice(cpu, torch.bfloat16)["used"]  # SDPA computes in fp32 there
    assert not blocked.blocked_attention_choice(cpu, torch.float16)["used"]
    monkeypatch.setattr(hardware, "cached_measurement", lambda name, measure: ({"blocked_faster": True,
                        "blocked_seconds": 0.01, "sdpa_seconds": 0.02}, True))
    assert blocked.blocked_attention_choice(cpu, torch.float32)["used"]
    monkeypatch.setattr(hardware, "cached_measurement", lambda name, measure: ({"blocked_faster": False,
                        "blocked_seconds": 0.02, "sdpa_seconds": 0.01}, True))
    assert not blocked.blocked_attention_choice(cpu, torch.float32)["used"]
    assert not blocked.blocked_attention_choice(torch.device("meta"), torch.bfloat16)["used"]


def test_the_fp32_measurement_times_both_paths():
    from longrope.attention.blocked import _measured_faster

    result = _measured_faster(torch.float32)
    assert result["sdpa_seconds"] > 0 and result["blocked_seconds"] > 0
    assert result["blocked_faster"] == (result["blocked_seconds"] < 0.9 * result["sdpa_seconds"])


def _qkv(batch, heads, kv_heads, length, dim, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = lambda h: (batch, h, length, dim)  # noqa: E731
    # Scores of a few units, as in trained models, so the softmax is neither flat nor one-hot.
    return (torch.randn(shape(heads), generator=g, dtype=torch.float64).mul(1.5).to(dtype),
            torch.randn(shape(kv_heads), generator=g, dtype=torch.float64).mul(1.5).to(dtype),
            torch.randn(shape(kv_heads), generator=g, dtype=torch.float64).to(dtype))


def _reference(q, k, v, scaling):
    """Float64 causal attention, written out: [B, T, H, D]."""
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = q @ k.transpose(-1, -2) * scaling
    length = q.shape[2]
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(-1)
    return (probs @ v).transpose(1, 2)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2), (4, 1)])
@pytest.mark.parametrize("length,block", [(1, None), (37, 8), (100, 16), (130, None)])
def test_float32_equals_reference_and_sdpa(heads, kv_heads, length, block):
    q, k, v = _qkv(2, heads, kv_heads, length, 16, torch.float32)
    ours = blocked_causal_attention(q, k, v, 16 ** -0.5, block=block)
    assert ours.shape == (2, length, heads, 16)
    torch.testing.assert_close(ours.double(), _reference(q, k, v, 16 ** -0.5), atol=1e-5, rtol=1e-5)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(ours, sdpa, atol=1e-5, rtol=1e-5)


def test_bf16_as_accurate_as_transformers_eager():
    """In bf16 it computes what eager attention computes, so its error against float64 is eager's."""
    from transformers.models.llama.modeling_llama import eager_attention_forward

    q, k, v = _qkv(1, 6, 2, 300, 32, torch.bfloat16, seed=3)
    scaling = 32 ** -0.5
    reference = _reference(q, k, v, scaling)
    future = torch.zeros(300, 300).masked_fill(torch.ones(300, 300, dtype=torch.bool).triu(1), float("-inf"))
    module = torch.nn.Module()
    module.num_key_value_groups, module.training = 3, False
    eager, _ = eager_attention_forward(module, q, k, v, future[None, None].bfloat16(), scaling=scaling)
    ours = blocked_causal_attention(q, k, v, scaling, block=64)
    for stat in (torch.max, torch.mean):  # the worst entry and the typical one
        err_ours = stat((ours.double() - reference).abs()).item()
        err_eager = stat((eager.double() - reference).abs()).item()
        assert err_ours <= 1.25 * err_eager, (stat.__name__, err_ours, err_eager)


def _sdpa_model(dtype=torch.float32, arch="llama", **kwargs):
    model = tiny_model(arch, attn_implementation="sdpa", window=64, **kwargs).to(dtype)
    set_attention_implementation(model, "sdpa")
    return model


@pytest.mark.parametrize("arch,kv_heads", [("llama", 4), ("llama", 2), ("llama", 1), ("mistral", 2), ("qwen2", 2),
                                           ("phi3", 4)])
def test_model_logits_match_sdpa_in_float32(arch, kv_heads):
    model = _sdpa_model(arch=arch, kv_heads=kv_heads)
    ids = torch.randint(3, 97, (2, 150), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids).logits
        register()
        set_attention_implementation(model, NAME)
        ours = model(ids).logits
    set_attention_implementation(model, "sdpa")
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_scoring_switches_only_bf16_cpu_without_grad_and_restores():
    model = _sdpa_model(torch.bfloat16)
    with torch.no_grad(), scoring_attention(model) as switched:
        assert switched and model.config._attn_implementation == NAME
    assert model.config._attn_implementation == "sdpa"
    with scoring_attention(model) as switched:  # gradients on: a backward pass would keep every block
        assert not switched
    with torch.no_grad(), scoring_attention(_sdpa_model(torch.float32)) as switched:
        assert not switched
    eager = tiny_model("llama").to(torch.bfloat16)
    with torch.no_grad(), scoring_attention(eager) as switched:
        assert not switched and eager.config._attn_implementation == "eager"
    with pytest.raises(RuntimeError), torch.no_grad(), scoring_attention(model):
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_bf16_token_nll_close_to_sdpa_and_float32():
    model = _sdpa_model(torch.bfloat16)
    ids = torch.randint(3, 97, (1, 200), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast = token_nll(model, ids)
        slow = token_nll(model, ids, fast_attention=False)
        exact = token_nll(_sdpa_model(torch.float32), ids)
    assert not torch.equal(fast, slow)  # the blocked path really ran
    assert abs(fast.mean() - exact.mean()) / exact.mean() < 2e-3
    assert abs(fast.mean() - slow.mean()) / exact.mean() < 2e-3


def test_padding_mask_falls_back_to_sdpa():
    model = _sdpa_model(torch.bfloat16)
    ids = torch.randint(3, 97, (2, 40), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding: the blocked path cannot take it
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        with scoring_attention(model) as switched:
            assert switched
            ours = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)


@pytest.mark.parametrize("extra", [{"is_causal": False}, {"sliding_window": 8}, {"softcap": 30.0}])
def test_anything_but_plain_causal_goes_to_sdpa(extra, monkeypatch):
    from transformers.integrations import sdpa_attention

    import longrope.attention.blocked as blocked

    calls = []
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", lambda *a, **k: calls.append(k) or ("sdpa", None))
    q, k, v = _qkv(1, 2, 2, 8, 4, torch.float32)
    module = torch.nn.Module()
    with torch.no_grad():
        out, _ = blocked.blocked_attention_forward(module, q, k, v, None, scaling=0.5, **extra)
        plain, _ = blocked.blocked_attention_forward(module, q, k, v, None, scaling=0.5)
    assert out == "sdpa" and len(calls) == 1
    assert isinstance(plain, torch.Tensor)
