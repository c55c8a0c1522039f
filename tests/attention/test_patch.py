"""apply/restore on live models: logit parity with transformers' native rope_parameters, n_hat, NTK, errors."""

import math
import warnings

import pytest
import torch
from factories import ARCHITECTURES, same_weights, tiny_model
from torch import nn

from longrope.attention.patch import apply, current_spec, restore, sequence_length
from longrope.errors import LongRopeError
from longrope.rope import (
    DynamicNTKSpec,
    LinearSpec,
    Llama3Spec,
    LongRopeSpec,
    NoScaling,
    NTKSpec,
    YarnSpec,
    ntk_base,
)
from longrope.rope.geometry import RopeGeometry

WINDOW = 64
LONG = [1.0 + 0.4 * i for i in range(8)]  # head_dim 16 -> 8 pairs
SHORT = [1.0 + 0.02 * i for i in range(8)]

NATIVE = {
    "pi": ({"rope_type": "linear", "factor": 4.0}, LinearSpec(factor=4.0)),
    "dynamic_ntk": ({"rope_type": "dynamic", "factor": 4.0}, DynamicNTKSpec(factor=4.0)),
    "yarn": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": WINDOW},
             YarnSpec(factor=4.0)),
    "llama3": ({"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": WINDOW}, Llama3Spec(factor=4.0)),
    "longrope": ({"rope_type": "longrope", "long_factor": LONG, "short_factor": SHORT, "factor": 4.0,
                  "original_max_position_embeddings": WINDOW},
                 LongRopeSpec(long_factor=LONG, short_factor=SHORT, factor=4.0)),
}
# Phi-3's config accepts only longrope scaling.
CASES = [(arch, m) for arch in ARCHITECTURES for m in NATIVE if arch != "phi3" or m == "longrope"]


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("arch,method", CASES)
def test_logits_match_native_rope_parameters(arch, method):
    rope_parameters, spec = NATIVE[method]
    reference = tiny_model(arch)
    # Native model: its window is the extended one, as a real extended checkpoint would declare.
    native = same_weights(tiny_model(arch, rope_parameters=rope_parameters,
                                     window=WINDOW if method in ("pi", "dynamic_ntk") else 4 * WINDOW), reference)
    ours = apply(same_weights(tiny_model(arch), reference), spec)
    torch.manual_seed(1)
    for length in (WINDOW // 2, WINDOW, 3 * WINDOW):  # below, at and above the original window
        ids = torch.randint(3, 97, (2, length))
        torch.testing.assert_close(logits(ours, ids), logits(native, ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_restore_gives_back_original_logits_exactly(arch):
    model = tiny_model(arch)
    ids = torch.randint(3, 97, (1, 100))
    before = logits(model, ids)
    apply(model, YarnSpec(factor=4.0) if arch != "phi3" else LinearSpec(factor=4.0))
    assert not torch.equal(logits(model, ids), before)
    apply(model, LinearSpec(factor=2.0))  # re-applying replaces, never stacks
    assert current_spec(model) == LinearSpec(factor=2.0)
    restore(model)
    assert current_spec(model) is None
    assert torch.equal(logits(model, ids), before)


def test_ntk_equals_plain_rope_with_enlarged_base():
    """Reference for NTK-aware (not in transformers): the same model with rope_theta = b * s^(d/(d-2))."""
    reference = tiny_model("llama")
    d, s = 16, 4.0
    base = ntk_base(s, RopeGeometry(d, 10000.0, WINDOW))
    assert base == pytest.approx(10000.0 * s ** (d / (d - 2)))
    enlarged = same_weights(tiny_model("llama", rope_parameters={"rope_theta": base}), reference)
    ours = apply(same_weights(tiny_model("llama"), reference), NTKSpec(factor=s))
    ids = torch.randint(3, 97, (2, 150))
    torch.testing.assert_close(logits(ours, ids), logits(enlarged, ids), atol=1e-5, rtol=0)


class ExplicitRotary(nn.Module):
    """Slow reference: angle of pair i at position n written out one position at a time."""

    def __init__(self, per_position_inv_freq, attention):
        super().__init__()
        self.per_position_inv_freq = per_position_inv_freq  # fn(position) -> list of d/2 floats
        self.attention = attention

    def forward(self, x, position_ids):
        rows = []
        for row in position_ids.tolist():
            angles = [[n * f for f in self.per_position_inv_freq(n)] for n in row]
            rows.append(angles)
        freqs = torch.tensor(rows, dtype=torch.float64)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention).to(x.dtype), (emb.sin() * self.attention).to(x.dtype)


@pytest.mark.parametrize("n_hat", [0, 1, 4, 32])
@pytest.mark.parametrize("length", [40, 150])
def test_n_hat_against_explicit_angles(n_hat, length):
    d, b, s = 16, 10000.0, 4.0
    spec = LongRopeSpec(long_factor=LONG, short_factor=SHORT, n_hat=n_hat, factor=s)
    plain = [b ** (-2 * i / d) for i in range(d // 2)]
    factors = LONG if length > WINDOW else SHORT
    attention = math.sqrt(1 + math.log(s) / math.log(WINDOW))

    def per_position(n):
        return plain if n < n_hat else [f / lam for f, lam in zip(plain, factors)]

    reference = tiny_model("llama")
    explicit = same_weights(tiny_model("llama"), reference)
    explicit.model.rotary_emb = ExplicitRotary(per_position, attention)
    ours = apply(same_weights(tiny_model("llama"), reference), spec)
    ids = torch.randint(3, 97, (1, length))
    # The reference's angles are float64, ours float32 (rounding ~ n * 2^-24 rad): hence 3e-5, not 1e-5.
    torch.testing.assert_close(logits(ours, ids), logits(explicit, ids), atol=3e-5, rtol=0)


def test_partial_rotary_factor_respected():
    reference = tiny_model("phi3", partial_rotary_factor=0.5)
    long, short = LONG[:4], SHORT[:4]
    rope_parameters = {"rope_type": "longrope", "long_factor": long, "short_factor": short, "factor": 4.0,
                       "original_max_position_embeddings": WINDOW, "partial_rotary_factor": 0.5}
    native = same_weights(tiny_model("phi3", rope_parameters=rope_parameters, window=4 * WINDOW,
                                     original_max_position_embeddings=WINDOW), reference)
    ours = apply(same_weights(tiny_model("phi3", partial_rotary_factor=0.5), reference),
                 LongRopeSpec(long_factor=long, short_factor=short, factor=4.0))
    for length in (50, 200):
        ids = torch.randint(3, 97, (1, length))
        torch.testing.assert_close(logits(ours, ids), logits(native, ids), atol=1e-5, rtol=0)
    with pytest.raises(LongRopeError, match="8 rescale factors given, but the model has 4 rotary pairs"):
        apply(ours, LongRopeSpec(long_factor=LONG, factor=4.0))


def greedy(model, ids, steps):
    out = model.generate(ids, max_new_tokens=steps, do_sample=False, min_new_tokens=steps, pad_token_id=0)
    return out[:, ids.shape[1]:]


def recompute_greedy(model, ids, steps):
    """Greedy decoding by full forwards, no cache; EOS (id 2) suppressed as min_new_tokens does."""
    seq = ids
    for _ in range(steps):
        last = logits(model, seq)[:, -1]
        last[:, 2] = float("-inf")
        seq = torch.cat([seq, last.argmax(-1, keepdim=True)], dim=1)
    return seq[:, ids.shape[1]:]


def test_short_long_chosen_once_per_sequence_with_kv_cache():
    """A prompt inside the window that decodes past it keeps one table for the whole sequence."""
    model = apply(tiny_model("llama"), LongRopeSpec(long_factor=LONG, short_factor=SHORT, factor=4.0))
    ids = torch.randint(3, 97, (1, WINDOW - 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cached = greedy(model, ids, 10)
    assert any("keeping them so the KV cache stays consistent" in str(w.message) for w in caught)
    # Same tokens as full recomputation with the short factors for every step (what the cache holds).
    short_model = apply(tiny_model("llama"), LongRopeSpec(long_factor=SHORT, short_factor=SHORT, factor=4.0))
    assert torch.equal(cached, recompute_greedy(short_model, ids, 10))
    # Declaring the full length up front picks the long factors from the first token on.
    with sequence_length(model, ids.shape[1] + 10):
        declared = greedy(model, ids, 10)
    long_model = apply(tiny_model("llama"), LongRopeSpec(long_factor=LONG, short_factor=LONG, factor=4.0))
    assert torch.equal(declared, recompute_greedy(long_model, ids, 10))
    assert not torch.equal(declared, cached)  # the two tables really differ on this model


def test_per_row_specs_equal_separate_runs():
    specs = [LinearSpec(factor=4.0), YarnSpec(factor=4.0), LongRopeSpec(long_factor=LONG, n_hat=4, factor=4.0)]
    reference = tiny_model("qwen2")
    ids = torch.randint(3, 97, (1, 150)).repeat(3, 1)
    batched = logits(apply(same_weights(tiny_model("qwen2"), reference), specs), ids)
    for row, spec in enumerate(specs):
        single = logits(apply(same_weights(tiny_model("qwen2"), reference), spec), ids[:1])
        torch.testing.assert_close(batched[row : row + 1], single, atol=1e-5, rtol=0)


def test_model_without_rope_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=64))
    with pytest.raises(LongRopeError, match="GPT2LMHeadModel has no rotary position embedding"):
        apply(gpt2, LinearSpec(factor=2.0))


def test_bad_apply_arguments():
    model = tiny_model("llama")
    with pytest.raises(LongRopeError, match="needs a RopeSpec"):
        apply(model, {"method": "pi"})
    with pytest.raises(LongRopeError, match="3 rescale factors"):
        apply(model, LongRopeSpec(long_factor=[1.0, 2.0, 3.0]))
    assert current_spec(model) is None  # a failed apply leaves the model untouched
    apply(model, [NoScaling(), NoScaling()])
    with pytest.raises(LongRopeError, match="2 per-row specs are applied but the batch has 3 rows"):
        logits(model, torch.randint(3, 97, (3, 10)))


def test_a_spec_made_for_another_window_is_refused():
    """A SmolLM2 spec (window 8192) on a model whose window is 64 would switch and scale at the wrong length."""
    model = tiny_model("llama")  # window 64, 8 rotary pairs
    foreign = LongRopeSpec(long_factor=[2.0] * 8, factor=2.0, original_window=8192)
    with pytest.raises(LongRopeError, match="original window of 8192 tokens, but the model's is 64"):
        apply(model, foreign)
    apply(model, LongRopeSpec(long_factor=[2.0] * 8, factor=2.0))  # no window: the model's is used
    apply(model, LongRopeSpec(long_factor=[2.0] * 8, factor=2.0, original_window=64))
