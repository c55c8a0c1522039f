"""`model_rope`: layouts read from the model, layer types, NoPE layers, refusals that name the reason."""

from __future__ import annotations

import pytest
import torch
from architectures import ARCHITECTURES, tiny_model

from longrope.attention import apply, restore
from longrope.attention.model_rope import detect_layout, model_rope
from longrope.attention.rotary import COMPLEX, HALF, INTERLEAVED, PAIRS, SIN_COS_PAIRS, ScaledRotaryEmbedding
from longrope.errors import LongRopeError
from longrope.models.info import model_info
from longrope.rope import LinearSpec, NoScaling, RopeGeometry, YarnSpec


pytestmark = pytest.mark.usefixtures("one_thread")


def arch(model_type):
    return next(a for a in ARCHITECTURES if a.model_type == model_type)


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.randint(3, 97, (1, 200), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layout", [HALF, INTERLEAVED, COMPLEX, PAIRS, SIN_COS_PAIRS])
def test_each_layout_is_recognised_from_the_tables_it_writes(layout):
    geometry = RopeGeometry(16, 10000.0, 64)
    module = ScaledRotaryEmbedding([NoScaling()], geometry, layout)
    out = module(torch.zeros(1, 5, 1), torch.arange(5)[None])
    assert detect_layout(out, 16, "m") == layout


def test_an_unknown_layout_is_refused_with_what_it_returned():
    with pytest.raises(LongRopeError, match=r"returns one torch.float32 tensor of shape \[1, 5, 3\]"):
        detect_layout(torch.zeros(1, 5, 3), 16, "SomeModel's SomeRotaryEmbedding")


def test_cohere_interleaved_layout_is_read_and_kept():
    """Cohere's module interleaves pairs: ours writes the same layout, so plain RoPE changes nothing."""
    model = tiny_model(arch("cohere"))
    assert [s.layout for s in model_rope(model).sites] == [INTERLEAVED]
    before = logits(model, IDS)
    apply(model, NoScaling())
    assert float((logits(model, IDS) - before).abs().max()) == 0.0
    assert model_info(model).rotary_layout == INTERLEAVED


def test_deepseek_v2_writes_complex_freqs_cis():
    model = tiny_model(arch("deepseek_v2"))
    assert model_rope(model).layouts == (COMPLEX,)
    before = logits(model, IDS)
    apply(model, YarnSpec(factor=4.0))
    assert not torch.equal(logits(model, IDS), before)
    restore(model)
    assert torch.equal(logits(model, IDS), before)


def test_falcon_with_alibi_is_refused_with_that_reason():
    model = tiny_model(arch("falcon").__class__("falcon", "Falcon", {"alibi": True}))
    before = logits(model, IDS[:, :60])
    with pytest.raises(LongRopeError, match="falcon with alibi=True adds ALiBi attention biases and never calls its "
                                            "rotary module"):
        apply(model, YarnSpec(factor=4.0))
    assert torch.equal(logits(model, IDS[:, :60]), before)
    with pytest.raises(LongRopeError, match="ALiBi"):
        model_info(model)


def test_a_rotary_module_computing_something_else_is_refused():
    """The tables are checked, not assumed: a module whose forward differs from RoPE is named and refused."""
    model = tiny_model(arch("llama"))
    rotary = model.model.rotary_emb
    original = type(rotary).forward

    def shifted(self, x, position_ids):
        return original(self, x, position_ids + 1)

    rotary.forward = shifted.__get__(rotary)
    with pytest.raises(LongRopeError, match=r"LlamaRotaryEmbedding computes other rotary tables than RoPE with "
                                            r"RopeGeometry\(dim=16, base=10000.0, original_window=64\)"):
        apply(model, LinearSpec(factor=2.0))


def test_gemma3_layer_types_each_keep_their_base_and_the_spec_scales_the_full_layers():
    model = tiny_model(arch("gemma3_text"))
    rope = model_rope(model)
    assert [(t.layer_type, t.geometry.base, t.layers) for t in rope.tables] == [
        ("sliding_attention", 10000.0, (0,)), ("full_attention", 1000000.0, (1,))]
    assert rope.default_layer_type == "full_attention"
    info = model_info(model)
    assert info.rope_base == 1e6
    assert "base 10000" in info.layer_types["sliding_attention"]
    assert "sliding window 32" in info.layer_types["sliding_attention"]
    assert "keeps its RoPE" in info.layer_types["sliding_attention"]
    assert "a spec scales it by default" in info.layer_types["full_attention"]
    apply(model, LinearSpec(factor=4.0))
    assert "pi(factor=4.0) on the full_attention layers" in model_info(model).scaling
    assert "scaled by the applied spec" in model_info(model).layer_types["full_attention"]


def test_gemma3_sliding_layers_can_be_named_instead():
    """layer_type= scales another type; the same spec on the sliding layers matches transformers' own."""
    from architectures import WINDOW, native_parameters, tiny_config
    from transformers import AutoModelForCausalLM

    model = tiny_model(arch("gemma3_text"))
    config = tiny_config(arch("gemma3_text"))
    config.rope_parameters["sliding_attention"].update(native_parameters("pi"))
    native = AutoModelForCausalLM.from_config(config).eval()
    native.load_state_dict(model.state_dict())
    apply(model, LinearSpec(factor=4.0), layer_type="sliding_attention")
    assert float((logits(model, IDS) - logits(native, IDS)).abs().max()) < 1e-5
    with pytest.raises(LongRopeError, match="has no RoPE layer type 'global'"):
        apply(model, LinearSpec(factor=4.0), layer_type="global")
    assert WINDOW == 64


def test_layer_types_cannot_be_chosen_on_a_flat_model():
    with pytest.raises(LongRopeError, match="one RoPE table for every layer"):
        apply(tiny_model(arch("llama")), LinearSpec(factor=2.0), layer_type="full_attention")


def test_nope_layers_stay_nope_and_info_names_them():
    """SmolLM3 skips RoPE every 4th layer; Cohere 2 in its global layers."""
    smollm3 = tiny_model(arch("smollm3"))
    assert model_rope(smollm3).nope_layers == (3,)
    assert model_info(smollm3).rope_layers == "0-2 (NoPE, no position embedding: 3)"
    cohere2 = tiny_model(arch("cohere2"))
    assert model_info(cohere2).rope_layers == "0 (NoPE, no position embedding: 1)"
    assert model_info(tiny_model(arch("llama"))).rope_layers == "all 2"


def test_all_nope_and_no_rope_models_are_refused():
    from architectures import Architecture

    with pytest.raises(LongRopeError, match="none of its 2 layers uses RoPE"):
        apply(tiny_model(Architecture("smollm3", "SmolLM3", {"no_rope_layers": [0, 0]})), NoScaling())
    with pytest.raises(LongRopeError, match=r"has no rotary position embedding \(its config: "
                                            r"position_embedding_type=None\)"):
        apply(tiny_model(Architecture("granitemoehybrid", "Granite", {"layer_types": ["mamba", "attention"]})),
              NoScaling())
    zamba2 = {k: v for k, v in arch("zamba2").config.items() if k != "use_mem_rope"}
    with pytest.raises(LongRopeError, match="Zamba2ForCausalLM has no rotary position embedding"):
        apply(tiny_model(Architecture("zamba2", "Zamba2", zamba2)), NoScaling())


def test_multimodal_positions_of_image_grids_are_refused_at_run_time():
    model = apply(tiny_model(arch("qwen3_5_text")), LinearSpec(factor=2.0))
    rotary = next(m for m in model.modules() if isinstance(m, ScaledRotaryEmbedding))
    text = torch.arange(6).view(1, 1, 6).expand(3, 1, 6)
    cos, _ = rotary(torch.zeros(1, 6, 1), text)
    assert cos.shape == (1, 6, rotary.geometry.dim)
    grid = text.clone()
    grid[1, 0, 3:] = 0
    with pytest.raises(LongRopeError, match="multimodal RoPE positions"):
        rotary(torch.zeros(1, 6, 1), grid)


def test_a_model_cast_to_bf16_is_still_read():
    """``model.to(torch.bfloat16)`` rounds the rotary module's inv_freq buffer: the check allows for exactly that."""
    model = tiny_model(arch("llama")).to(torch.bfloat16)
    assert model.model.rotary_emb.inv_freq.dtype == torch.bfloat16
    apply(model, LinearSpec(factor=2.0))
    assert model_rope(model).layouts == (HALF,)


def test_string_attention_is_refused_where_it_would_turn_the_wrong_pairs():
    from longrope.rope import StringSpec

    with pytest.raises(LongRopeError, match="STRING attention is implemented for models with one half-split RoPE "
                                            "table .* cohere has interleaved tables"):
        apply(tiny_model(arch("cohere")), StringSpec())
    with pytest.raises(LongRopeError, match="gemma3_text has one per layer type"):
        apply(tiny_model(arch("gemma3_text")), StringSpec())
