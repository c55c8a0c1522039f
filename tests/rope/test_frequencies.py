"""Our inverse frequencies and attention factors against transformers' ROPE_INIT_FUNCTIONS (and slow references)."""

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from longrope.rope import (
    DynamicNTKSpec,
    LinearSpec,
    Llama3Spec,
    LongRopeSpec,
    NoScaling,
    NTKSpec,
    RopeGeometry,
    YarnSpec,
    inv_freq_for,
    rescale_factors,
)

GRID = [(d, b, window) for d in (16, 64, 128) for b in (10000.0, 500000.0) for window in (256, 4096)]


def hf_config(d, base, window, rope_parameters, max_position=None):
    params = {"rope_theta": base, **rope_parameters}
    return LlamaConfig(hidden_size=d * 2, num_attention_heads=2, head_dim=d, num_key_value_heads=2,
                       max_position_embeddings=max_position or window, rope_parameters=params)


def assert_close(ours, theirs):
    torch.testing.assert_close(ours[0], theirs[0].float(), rtol=1e-6, atol=1e-9)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("d,base,window", GRID)
@pytest.mark.parametrize("s", [1.0, 2.0, 8.0, 16.0])
def test_pi(d, base, window, s):
    config = hf_config(d, base, window, {"rope_type": "linear", "factor": s})
    geometry = RopeGeometry(d, base, window)
    assert_close(inv_freq_for(LinearSpec(factor=s), geometry), ROPE_INIT_FUNCTIONS["linear"](config))


@pytest.mark.parametrize("d,base,window", GRID)
@pytest.mark.parametrize("s", [2.0, 8.0])
@pytest.mark.parametrize("seq_len", [None, 10, 1, 3])  # multiples of the window, None = at the window
def test_dynamic_ntk(d, base, window, s, seq_len):
    config = hf_config(d, base, window, {"rope_type": "dynamic", "factor": s})
    n = None if seq_len is None else seq_len * window
    geometry = RopeGeometry(d, base, window)
    assert_close(inv_freq_for(DynamicNTKSpec(factor=s), geometry, n),
                 ROPE_INIT_FUNCTIONS["dynamic"](config, seq_len=n))


@pytest.mark.parametrize("d,base,window", GRID)
@pytest.mark.parametrize("s", [1.0, 4.0, 16.0])
@pytest.mark.parametrize("betas", [(32.0, 1.0), (16.0, 2.0), (64.0, 0.5)])
@pytest.mark.parametrize("attention_factor", [None, 1.3])
def test_yarn(d, base, window, s, betas, attention_factor):
    params = {"rope_type": "yarn", "factor": s, "beta_fast": betas[0], "beta_slow": betas[1],
              "original_max_position_embeddings": window}
    if attention_factor is not None:
        params["attention_factor"] = attention_factor
    config = hf_config(d, base, window, params, max_position=int(window * s))
    spec = YarnSpec(factor=s, beta_fast=betas[0], beta_slow=betas[1], attention_factor=attention_factor)
    assert_close(inv_freq_for(spec, RopeGeometry(d, base, window)), ROPE_INIT_FUNCTIONS["yarn"](config))


@pytest.mark.parametrize("d,base,window", GRID)
@pytest.mark.parametrize("s", [2.0, 8.0, 32.0])
@pytest.mark.parametrize("low_high", [(1.0, 4.0), (2.0, 8.0)])
def test_llama3(d, base, window, s, low_high):
    params = {"rope_type": "llama3", "factor": s, "low_freq_factor": low_high[0], "high_freq_factor": low_high[1],
              "original_max_position_embeddings": window}
    config = hf_config(d, base, window, params, max_position=int(window * s))
    spec = Llama3Spec(factor=s, low_freq_factor=low_high[0], high_freq_factor=low_high[1])
    assert_close(inv_freq_for(spec, RopeGeometry(d, base, window)), ROPE_INIT_FUNCTIONS["llama3"](config))


@pytest.mark.parametrize("d,base,window", GRID)
@pytest.mark.parametrize("s", [1.0, 4.0, 16.0])
@pytest.mark.parametrize("seq_len", [None, 0.5, 1.0, 2.0])  # as multiples of the window
@pytest.mark.parametrize("attention_factor", [None, 1.1])
def test_longrope(d, base, window, s, seq_len, attention_factor):
    gen = torch.Generator().manual_seed(d + int(s))
    long = (1 + torch.rand(d // 2, generator=gen) * s).tolist()
    short = (1 + torch.rand(d // 2, generator=gen) * 0.2).tolist()
    params = {"rope_type": "longrope", "long_factor": long, "short_factor": short, "factor": s,
              "original_max_position_embeddings": window}
    if attention_factor is not None:
        params["attention_factor"] = attention_factor
    config = hf_config(d, base, window, params, max_position=int(window * s))
    n = None if seq_len is None else int(seq_len * window)
    spec = LongRopeSpec(long_factor=long, short_factor=short, factor=s, attention_factor=attention_factor)
    assert_close(inv_freq_for(spec, RopeGeometry(d, base, window), n),
                 ROPE_INIT_FUNCTIONS["longrope"](config, seq_len=n))


@pytest.mark.parametrize("d,base,window", GRID)
@pytest.mark.parametrize("s", [1.0, 2.0, 8.0, 64.0])
def test_ntk_against_reference(d, base, window, s):
    """transformers has no static NTK: compare with b' = b * s^(d/(d-2)) written out in float64."""
    new_base = base * s ** (d / (d - 2))
    expected = torch.tensor([new_base ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    inv, attention = inv_freq_for(NTKSpec(factor=s), RopeGeometry(d, base, window))
    torch.testing.assert_close(inv.double(), expected, rtol=2e-6, atol=0)
    assert attention == 1.0
    lam, _ = rescale_factors(NTKSpec(factor=s), RopeGeometry(d, base, window))
    expected_lambda = torch.tensor([s ** ((2 * i / d) * d / (d - 2)) for i in range(d // 2)], dtype=torch.float64)
    torch.testing.assert_close(lam, expected_lambda)


@pytest.mark.parametrize("spec", [NoScaling(), LinearSpec(factor=8.0), NTKSpec(factor=8.0), YarnSpec(factor=8.0),
                                  Llama3Spec(factor=8.0), LongRopeSpec(long_factor=[1.5] * 32, factor=8.0)])
def test_rescale_factors_reproduce_frequencies(spec):
    """inv_freq' = inv_freq / lambda for every static method (these are the search seeds)."""
    geometry = RopeGeometry(64, 10000.0, 256)
    lam, attention = rescale_factors(spec, geometry)
    base = torch.tensor([10000.0 ** (-2 * i / 64) for i in range(32)], dtype=torch.float64)
    inv, expected_attention = inv_freq_for(spec, geometry, 2048)
    torch.testing.assert_close((base / lam).float(), inv, rtol=1e-6, atol=0)
    assert attention == pytest.approx(expected_attention)
    assert bool((lam >= 1 - 1e-9).all())


def test_yarn_ramp_matches_design_formula():
    """Pairs below `low` keep their frequency, above `high` are divided by s (YaRN, arXiv 2309.00071, as in
    transformers' ``_compute_yarn_parameters``)."""
    d, b, window, s = 64, 10000.0, 256, 8.0
    corr = lambda r: d * math.log(window / (2 * math.pi * r)) / (2 * math.log(b))  # noqa: E731
    low, high = max(math.floor(corr(32)), 0), min(math.ceil(corr(1)), d - 1)
    lam, attention = rescale_factors(YarnSpec(factor=s), RopeGeometry(d, b, window))
    assert lam[: low + 1].tolist() == pytest.approx([1.0] * (low + 1))
    assert lam[high:].tolist() == pytest.approx([s] * (d // 2 - high))
    assert attention == pytest.approx(0.1 * math.log(s) + 1)


def test_critical_dimension():
    geometry = RopeGeometry(64, 10000.0, 4096)
    expected = 2 * math.ceil(32 * math.log(4096 / (2 * math.pi)) / math.log(10000.0))
    assert geometry.critical_dim == expected == 46
