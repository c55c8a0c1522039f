"""STRING attention against a slow, obviously correct reference, plus caching, memory and error behaviour.

The reference runs the same tiny model with RoPE switched off in the layers (``apply_rotary_pos_emb`` made the
identity) and an attention function that, for every (query, key) pair, maps the distance with STRING's rule and
rotates the raw query by that distance explicitly, in float64.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from factories import same_weights, tiny_model
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from longrope.attention.patch import apply, restore
from longrope.attention.rotary import model_geometry
from longrope.attention.string import (
    NAME,
    install_string_attention,
    set_chunk_size,
    string_attention_core,
    string_parameters,
)
from longrope.errors import LongRopeError
from longrope.rope import LongRopeSpec, StringSpec, YarnSpec, inv_freq_for

REFERENCE = "longrope_test_string_reference"
VOCAB = 97


def _ids(length: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=gen)


def _reference_attention(shift: int, local_window: int, inv_freq: torch.Tensor, attention_factor: float):
    inv = inv_freq.double()
    rotary_dim = 2 * inv.shape[0]
    half = inv.shape[0]

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        # query/key arrive NOT rotated (RoPE is switched off in the layers for the reference run).
        q, k, v = query.double(), key.double(), value.double()
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        tq, tk = q.shape[2], k.shape[2]
        r = torch.arange(tk - tq, tk)[:, None] - torch.arange(tk)[None, :]  # [Tq, Tk] true distances
        mapped = torch.where(r >= shift, r - shift + local_window, r)
        angle = mapped[..., None].double() * inv  # [Tq, Tk, d/2]
        cos, sin = angle.cos(), angle.sin()
        q1, q2 = q[..., None, :half], q[..., None, half:rotary_dim]  # [B, H, Tq, 1, d/2]
        k1, k2 = k[:, :, None, :, :half], k[:, :, None, :, half:rotary_dim]  # [B, H, 1, Tk, d/2]
        # Query turned by its own mapped distance to each key (rotate-half pairs (i, i + d/2)), key unrotated;
        # RoPE's attention factor multiplies cos and sin of both, hence its square on the rotary part.
        rotated = ((q1 * cos - q2 * sin) * k1 + (q2 * cos + q1 * sin) * k2).sum(-1) * attention_factor**2
        passing = q[..., rotary_dim:] @ k[..., rotary_dim:].transpose(-1, -2)
        scores = ((rotated + passing) * scaling).masked_fill(r < 0, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return out.transpose(1, 2).contiguous().to(query.dtype), None

    return attention


def reference_logits(model, ids, shift, local_window, inv_freq, attention_factor=1.0, monkeypatch=None):
    """Logits of ``model`` (unpatched) with the slow STRING reference attention."""
    modeling = importlib.import_module(type(model).__module__)
    previous = model.config._attn_implementation
    AttentionInterface.register(REFERENCE, _reference_attention(shift, local_window, inv_freq, attention_factor))
    ALL_MASK_ATTENTION_FUNCTIONS.register(REFERENCE, sdpa_mask)
    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", lambda q, k, cos, sin, *a, **kw: (q, k))
    model.set_attn_implementation(REFERENCE)
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        model.set_attn_implementation(previous)
        monkeypatch.undo()


def _model_inv_freq(model) -> torch.Tensor:
    return model.model.rotary_emb.inv_freq.float().clone()


def _string_logits(model, ids, spec, chunk_size=None):
    apply(model, spec)
    try:
        if chunk_size:
            set_chunk_size(model, chunk_size)
        with torch.no_grad():
            return model(ids).logits
    finally:
        restore(model)


CASES = [
    # arch, extra config, (S, W), lengths, chunk size
    ("llama", {"kv_heads": 4}, (24, 4), (20, 70), 512),
    ("llama", {"kv_heads": 2}, (24, 4), (70,), 16),
    ("llama", {"kv_heads": 1}, (40, 16), (90,), 7),
    ("qwen2", {"kv_heads": 2}, (24, 4), (20, 70), 16),
    ("qwen2", {"kv_heads": 4}, (10, 0), (50,), 512),
    ("mistral", {"kv_heads": 2}, (32, 8), (75,), 10),
    ("phi3", {"kv_heads": 2, "partial_rotary_factor": 0.5}, (24, 4), (20, 70), 16),
    ("phi3", {"kv_heads": 4}, (12, 3), (45,), 512),
]


@pytest.mark.parametrize("arch,config,sw,lengths,chunk", CASES)
def test_matches_slow_reference(arch, config, sw, lengths, chunk, monkeypatch):
    shift, local_window = sw
    model = tiny_model(arch, **config)
    inv_freq = _model_inv_freq(model)
    for length in lengths:
        ids = _ids(length, batch=2)
        ours = _string_logits(model, ids, StringSpec(shift=shift, local_window=local_window), chunk)
        expected = reference_logits(model, ids, shift, local_window, inv_freq, monkeypatch=monkeypatch)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_reference_is_plain_rope_when_shift_exceeds_length(monkeypatch):
    """Calibrates the reference: with S beyond the sequence it must reproduce the stock model."""
    model = tiny_model("phi3", partial_rotary_factor=0.5)
    ids = _ids(40)
    with torch.no_grad():
        stock = model(ids).logits
    expected = reference_logits(model, ids, 1000, 4, _model_inv_freq(model), monkeypatch=monkeypatch)
    torch.testing.assert_close(expected, stock, atol=1e-5, rtol=0)


def test_reference_differs_from_plain_rope_beyond_shift(monkeypatch):
    model = tiny_model("llama")
    ids = _ids(60)
    with torch.no_grad():
        stock = model(ids).logits
    expected = reference_logits(model, ids, 20, 4, _model_inv_freq(model), monkeypatch=monkeypatch)
    torch.testing.assert_close(expected[:, :20], stock[:, :20], atol=1e-5, rtol=0)  # all distances < S
    assert (expected[:, 21:] - stock[:, 21:]).abs().amax() > 1e-2


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3"])
def test_shift_beyond_length_is_plain_rope(arch):
    model = tiny_model(arch)
    ids = _ids(50, batch=2)
    with torch.no_grad():
        stock = model(ids).logits
    spec = StringSpec(shift=50, local_window=5)
    torch.testing.assert_close(_string_logits(model, ids, spec), stock, atol=1e-6, rtol=0)
    torch.testing.assert_close(_string_logits(model, ids, spec, chunk_size=16), stock, atol=1e-5, rtol=0)


def test_attention_factor(monkeypatch):
    model = tiny_model("llama")
    ids = _ids(60)
    factor = 0.1 * math.log(2) + 1
    ours = _string_logits(model, ids, StringSpec(shift=20, local_window=6, attention_factor=factor), 16)
    expected = reference_logits(model, ids, 20, 6, _model_inv_freq(model), factor, monkeypatch=monkeypatch)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_composes_with_longrope(monkeypatch):
    model = tiny_model("llama", window=64)
    geometry = model_geometry(model)
    long_factor = tuple(1.0 + 0.25 * i for i in range(geometry.pairs))
    base = LongRopeSpec(long_factor=long_factor, short_factor=(1.0,) * geometry.pairs, factor=2.0)
    spec = StringSpec(local_window=8, base=base)
    ids = _ids(100)
    apply(model, spec)
    try:
        assert string_parameters(model) == (int(0.33 * 128), 8)  # S from the extended window 64 * 2
        set_chunk_size(model, 32)
        with torch.no_grad():
            ours = model(ids).logits
    finally:
        restore(model)
    inv_freq, attention = inv_freq_for(base.with_window(64), geometry, 100)  # long factors: 100 > 64
    assert attention > 1
    expected = reference_logits(model, ids, 42, 8, inv_freq, attention, monkeypatch=monkeypatch)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_composes_with_yarn(monkeypatch):
    model = tiny_model("qwen2", window=32)
    geometry = model_geometry(model)
    base = YarnSpec(factor=4.0)
    ids = _ids(80)
    ours = _string_logits(model, ids, StringSpec(shift=30, local_window=10, base=base), 24)
    inv_freq, attention = inv_freq_for(base.with_window(32), geometry, 80)
    expected = reference_logits(model, ids, 30, 10, inv_freq, attention, monkeypatch=monkeypatch)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


def test_prefill_never_materialises_the_full_attention_matrix():
    length, chunk = 1024, 64
    model = tiny_model("llama", heads=4, kv_heads=2, layers=1)
    ids = _ids(length)
    limit = length * length  # one head's full [T x T] matrix
    probe = _LargestTensor()
    with torch.no_grad(), probe:
        model(ids[:, :600])
    assert probe.largest > 600 * 600, "the probe must see eager attention's [T x T] scores"
    apply(model, StringSpec(shift=300, local_window=32))
    set_chunk_size(model, chunk)
    probe = _LargestTensor()
    with torch.no_grad(), probe:
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    assert probe.largest <= 4 * chunk * length < limit


def test_decoding_with_cache_equals_full_recompute():
    model = tiny_model("llama", kv_heads=2)
    prompt = _ids(30)
    apply(model, StringSpec(shift=24, local_window=4))
    set_chunk_size(model, 8)
    new = 16
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0)
        sequence = prompt
        for step in range(new):
            logits = model(sequence, use_cache=False).logits[:, -1]
            torch.testing.assert_close(out.logits[step], logits, atol=1e-5, rtol=0)
            sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out.sequences, sequence)


def test_chunked_prefill_with_cache_equals_one_pass():
    model = tiny_model("qwen2", kv_heads=2)
    ids = _ids(90, batch=2)
    apply(model, StringSpec(shift=20, local_window=5))
    set_chunk_size(model, 16)
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        pieces = [model(ids[:, a:b], cache=cache, use_cache=True).logits
                  for a, b in ((0, 33), (33, 34), (34, 70), (70, 90))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_left_padded_batch_equals_single_sequences():
    model = tiny_model("llama", kv_heads=2)
    short, long = _ids(26, seed=2), _ids(40, seed=3)
    apply(model, StringSpec(shift=20, local_window=4))
    set_chunk_size(model, 8)
    batch = torch.cat([torch.cat([torch.zeros(1, 14, dtype=torch.long), short], 1), long])
    mask = torch.cat([torch.cat([torch.zeros(1, 14), torch.ones(1, 26)], 1), torch.ones(1, 40)]).long()
    kwargs = {"max_new_tokens": 12, "min_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        together = model.generate(batch, attention_mask=mask, **kwargs)
        alone = [model.generate(x, **kwargs) for x in (short, long)]
    assert torch.equal(together[0, 14:], alone[0][0])
    assert torch.equal(together[1], alone[1][0])


def test_restore_and_reapply():
    model = tiny_model("llama")
    fresh = same_weights(tiny_model("llama"), model)
    ids = _ids(40)
    with torch.no_grad():
        stock = fresh(ids).logits
    apply(model, StringSpec(shift=10, local_window=2))
    assert model.config._attn_implementation == NAME
    apply(model, StringSpec(shift=12, local_window=3))  # replaces, never stacks
    assert string_parameters(model) == (12, 3)
    restore(model)
    assert model.config._attn_implementation == "eager"
    assert string_parameters(model) is None
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, stock, atol=0, rtol=0)


def test_core_handles_additive_masks_like_boolean_ones():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 12, 8), torch.randn(2, 2, 12, 8), torch.randn(2, 2, 12, 8)
    inv_freq = 1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8)
    keep = torch.ones(2, 1, 12, 12, dtype=torch.bool).tril()
    keep[0, :, :, :3] = False
    keep[0, :, :3, 0] = True  # padded queries still need one key
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    a = string_attention_core(q, k, v, keep, 0.3, 5, 1, inv_freq, chunk_size=4)
    b = string_attention_core(q, k, v, additive, 0.3, 5, 1, inv_freq, chunk_size=5)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    c = string_attention_core(q, k, v, None, 0.3, 5, 1, inv_freq, chunk_size=3)
    d = string_attention_core(q, k, v, torch.ones(2, 1, 12, 12, dtype=torch.bool).tril(), 0.3, 5, 1, inv_freq)
    torch.testing.assert_close(c, d, atol=1e-6, rtol=0)


# -- bad input ---------------------------------------------------------------------------------------------


def test_window_not_below_shift_is_rejected():
    with pytest.raises(LongRopeError, match="smaller than the shift"):
        StringSpec(shift=16, local_window=16)
    model = tiny_model("llama", window=64)  # default S = int(0.33 * 64) = 21 < W = 128
    with pytest.raises(LongRopeError, match="smaller than the shift"):
        apply(model, StringSpec(local_window=128))
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("shift", [0, -3])
def test_non_positive_shift_is_rejected(shift):
    with pytest.raises(LongRopeError, match="shift"):
        StringSpec(shift=shift, local_window=0)


def test_model_without_rope_is_rejected():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=64))
    with pytest.raises(LongRopeError, match="rotary"):
        apply(model, StringSpec(shift=20, local_window=4))
    llama = tiny_model("llama")
    with pytest.raises(LongRopeError, match="STRING needs a RoPE model"):
        install_string_attention(model, StringSpec(shift=20, local_window=4), model_geometry(llama))


def test_attention_without_parameters_is_rejected():
    model = tiny_model("llama")
    apply(model, StringSpec(shift=20, local_window=4))
    for m in model.modules():
        m.__dict__.pop("_longrope_string", None)
    with pytest.raises(LongRopeError, match="no STRING parameters"), torch.no_grad():
        model(_ids(10))
    restore(model)
