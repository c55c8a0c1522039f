"""GGUF export: rope factor tensors and keys read back with gguf.GGUFReader; weights and tokenizer read back by
transformers' GGUF loader; a copy of an existing GGUF keeps every other byte; optional llama.cpp check."""

from __future__ import annotations

import importlib.util

import gguf
import numpy as np
import pytest
import torch
from export_helpers import LONG, SHORT, WINDOW, tiny_with_tokenizer

from longrope.attention.patch import apply
from longrope.errors import LongRopeError
from longrope.export import add_rope_factors, convert_gguf_to_hf, read_gguf, write_gguf
from longrope.export.gguf_rope import rope_tensor_names
from longrope.rope import LinearSpec, LongRopeSpec, NoScaling, RopeGeometry, YarnSpec, rescale_factors
from longrope.rope.frequencies import longrope_attention_factor

LONGROPE = LongRopeSpec(long_factor=LONG, short_factor=SHORT, factor=4.0)
GEOMETRY = RopeGeometry(dim=16, base=10000.0, original_window=WINDOW)


def test_tensor_names_are_llama_cpps():
    names = rope_tensor_names()
    assert names == {"freqs": "rope_freqs.weight", "long": "rope_factors_long.weight",
                     "short": "rope_factors_short.weight"}
    # which architectures llama.cpp loads them for (gguf's own tensor lists)
    assert gguf.MODEL_TENSOR.ROPE_FREQS in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.LLAMA]
    assert gguf.MODEL_TENSOR.ROPE_FACTORS_LONG in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.PHI3]
    assert gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.PHI3]


def test_phi3_gguf_carries_long_and_short_factors(tmp_path, bpe_tokenizer):
    model = tiny_with_tokenizer("phi3", bpe_tokenizer)
    path = write_gguf(apply(model, LONGROPE), bpe_tokenizer, None, tmp_path / "phi3.gguf")
    meta, tensors = read_gguf(path)
    assert meta["general.architecture"] == "phi3"
    assert meta["phi3.context_length"] == 4 * WINDOW
    assert meta["phi3.rope.scaling.original_context_length"] == WINDOW
    assert meta["phi3.rope.scaling.attn_factor"] == pytest.approx(longrope_attention_factor(4.0, WINDOW), rel=1e-6)
    assert meta["phi3.rope.dimension_count"] == 16 and meta["phi3.rope.freq_base"] == 10000.0
    for name, values in (("rope_factors_long.weight", LONG), ("rope_factors_short.weight", SHORT)):
        assert tensors[name].dtype == np.float32 and tensors[name].shape == (8,)
        np.testing.assert_array_equal(tensors[name], np.asarray(values, np.float32))
    assert "rope_freqs.weight" not in tensors
    state = model.state_dict()
    np.testing.assert_array_equal(tensors["blk.0.attn_qkv.weight"], state["model.layers.0.self_attn.qkv_proj.weight"])
    np.testing.assert_array_equal(tensors["blk.1.ffn_up.weight"], state["model.layers.1.mlp.gate_up_proj.weight"])


def test_llama_gguf_keys_tensors_and_tokenizer(tmp_path, bpe_tokenizer):
    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    spec = YarnSpec(factor=4.0)
    path = write_gguf(model, bpe_tokenizer, spec, tmp_path / "llama.gguf", dtype="f16")
    meta, tensors = read_gguf(path)
    assert meta["general.architecture"] == "llama" and meta["general.file_type"] == 1  # MOSTLY_F16
    for key, value in {"llama.block_count": 2, "llama.embedding_length": 64, "llama.feed_forward_length": 128,
                       "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
                       "llama.rope.dimension_count": 16, "llama.context_length": 4 * WINDOW,
                       "llama.vocab_size": len(bpe_tokenizer)}.items():
        assert meta[key] == value, key
    expected, attention = rescale_factors(spec.with_window(WINDOW), GEOMETRY)
    np.testing.assert_allclose(tensors["rope_freqs.weight"], expected.numpy(), rtol=1e-6)
    assert meta["llama.rope.scaling.attn_factor"] == pytest.approx(attention, rel=1e-6)
    assert "llama.rope.scaling.factor" not in meta  # a factor key would make llama.cpp scale a second time
    expected_names = {"token_embd.weight", "output_norm.weight", "output.weight", "rope_freqs.weight"} | {
        f"blk.{i}.{t}.weight" for i in range(2) for t in
        ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
    assert set(tensors) == expected_names
    assert tensors["blk.0.attn_q.weight"].dtype == np.float16 and tensors["blk.0.attn_norm.weight"].dtype == np.float32
    assert tensors["blk.0.attn_k.weight"].shape == (32, 64)
    v = model.state_dict()["model.layers.0.self_attn.v_proj.weight"].numpy()
    np.testing.assert_array_equal(tensors["blk.0.attn_v.weight"], v.astype(np.float16))
    # q/k rows permuted to llama.cpp's interleaved pairs: row 1 of head 0 is HF row d/2
    q = model.state_dict()["model.layers.0.self_attn.q_proj.weight"].numpy().astype(np.float16)
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"][1], q[8])
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert len(meta["tokenizer.ggml.tokens"]) == len(bpe_tokenizer)
    assert meta["tokenizer.ggml.tokens"][0] == "<s>" and meta["tokenizer.ggml.token_type"][0] == 3  # CONTROL
    assert len(meta["tokenizer.ggml.merges"]) > 0
    assert meta["tokenizer.ggml.bos_token_id"] == 0 and meta["tokenizer.ggml.add_bos_token"] is True


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_transformers_gguf_loader_reads_our_weights_and_tokenizer(tmp_path, bpe_tokenizer, arch):
    """transformers ignores rope factors, so an unscaled export must reproduce the unpatched model exactly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_with_tokenizer(arch, bpe_tokenizer)
    path = write_gguf(model, bpe_tokenizer, NoScaling(), tmp_path / f"{arch}.gguf")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    text = "def hello(the fox):\n    return world"
    assert tokenizer(text).input_ids == bpe_tokenizer(text).input_ids
    ids = torch.tensor([bpe_tokenizer(text * 3).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=2e-5, rtol=0)


def test_phi3_round_trip_through_gguf_keeps_the_scaling(tmp_path, bpe_tokenizer):
    """write_gguf -> convert_gguf_to_hf -> stock transformers == the patched model, inside and beyond the window."""
    from transformers import AutoModelForCausalLM

    model = apply(tiny_with_tokenizer("phi3", bpe_tokenizer), LONGROPE)
    path = write_gguf(model, bpe_tokenizer, None, tmp_path / "phi3.gguf")
    out = convert_gguf_to_hf(path, tmp_path / "hf")
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert loaded.config.rope_parameters["rope_type"] == "longrope"
    torch.manual_seed(0)
    for length in (WINDOW // 2, 3 * WINDOW):
        ids = torch.randint(3, len(bpe_tokenizer), (1, length))
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


def test_copy_with_factors_keeps_everything_else(tmp_path, bpe_tokenizer):
    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    source = write_gguf(model, bpe_tokenizer, LinearSpec(factor=2.0), tmp_path / "src.gguf", dtype="f16")
    out = add_rope_factors(source, YarnSpec(factor=4.0), tmp_path / "yarn.gguf")
    meta0, tensors0 = read_gguf(source)
    meta, tensors = read_gguf(out)
    assert set(tensors) == set(tensors0)
    for name in tensors0:
        if name != "rope_freqs.weight":
            assert tensors[name].dtype == tensors0[name].dtype
            np.testing.assert_array_equal(tensors[name], tensors0[name])
    expected, attention = rescale_factors(YarnSpec(factor=4.0, original_window=WINDOW), GEOMETRY)
    np.testing.assert_allclose(tensors["rope_freqs.weight"], expected.numpy(), rtol=1e-6)
    assert meta["llama.rope.scaling.attn_factor"] == pytest.approx(attention, rel=1e-6)
    changed = {k for k in meta0 if k in meta and meta[k] != meta0[k]}
    assert changed == {"llama.context_length", "llama.rope.scaling.attn_factor"}
    assert meta["llama.context_length"] == 4 * WINDOW


def test_llama_gguf_cannot_switch_short_and_long(tmp_path, bpe_tokenizer):
    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    with pytest.raises(LongRopeError, match="short factors.*--lossy"):
        write_gguf(model, bpe_tokenizer, LONGROPE, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())
    path = write_gguf(model, bpe_tokenizer, LONGROPE, tmp_path / "x.gguf", lossy=True)
    np.testing.assert_array_equal(read_gguf(path)[1]["rope_freqs.weight"], np.asarray(LONG, np.float32))


def test_non_rope_gguf_is_refused(tmp_path):
    source = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(source, "gpt2")
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((10, 8), np.float32))
    writer.add_tensor("position_embd.weight", np.zeros((64, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LongRopeError, match="gpt2.*no rotary position embedding"):
        add_rope_factors(source, YarnSpec(factor=2.0), tmp_path / "out.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2.gguf"]


def test_bad_inputs(tmp_path, bpe_tokenizer):
    model = tiny_with_tokenizer("llama", bpe_tokenizer)
    source = write_gguf(model, bpe_tokenizer, None, tmp_path / "src.gguf")
    with pytest.raises(LongRopeError, match="exists"):
        write_gguf(model, bpe_tokenizer, None, source)
    with pytest.raises(LongRopeError, match="4 rescale factors.*8 rotary pairs"):
        add_rope_factors(source, LongRopeSpec(long_factor=[1, 2, 3, 4]), tmp_path / "out.gguf")
    with pytest.raises(LongRopeError, match="not a readable GGUF"):
        (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
        add_rope_factors(tmp_path / "junk.gguf", YarnSpec(factor=2.0), tmp_path / "out.gguf")
    with pytest.raises(LongRopeError, match="dynamic NTK"):
        from longrope.rope import DynamicNTKSpec

        add_rope_factors(source, DynamicNTKSpec(factor=2.0), tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


LLAMA_CPP_CASES = {
    # case: (arch, spec, model window, llama.cpp context, tokens). llama.cpp pads contexts to 256 tokens, so the
    # Phi-3 cases use a 256-token window to reach both of its tables (short: -c <= L, long: -c > L).
    "llama-none": ("llama", NoScaling(), WINDOW, 256, 192),
    "llama-pi": ("llama", LinearSpec(factor=4.0), WINDOW, 256, 192),
    "llama-yarn": ("llama", YarnSpec(factor=4.0), WINDOW, 256, 192),
    "llama-longrope-long": ("llama", LongRopeSpec(long_factor=LONG, factor=4.0), WINDOW, 256, 192),
    "phi3-longrope-short": ("phi3", LONGROPE, 256, 256, 192),
    "phi3-longrope-long": ("phi3", LONGROPE, 256, 512, 300),
}


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("case", list(LLAMA_CPP_CASES))
def test_llama_cpp_runs_the_export(tmp_path, bpe_tokenizer, case):
    """llama.cpp (llama-cpp-python) loads our GGUF; its logits and greedy tokens equal our patched model's."""
    import llama_cpp
    from factories import tiny_model

    arch, spec, window, context, length = LLAMA_CPP_CASES[case]
    model = tiny_model(arch, vocab=len(bpe_tokenizer), window=window, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    torch.manual_seed(0)
    ids = torch.randint(3, len(bpe_tokenizer), (1, length))
    with torch.no_grad():
        plain = model(ids).logits[0]
        ours = apply(model, spec)(ids).logits[0]
    path = write_gguf(model, bpe_tokenizer, None, tmp_path / "m.gguf", lossy=True)
    # f32 KV cache: llama.cpp's default f16 cache alone moves these logits by ~1e-2
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=context, logits_all=True, verbose=False, n_threads=2,
                          type_k=0, type_v=0)
    assert llm.n_ctx() == context
    llm.eval(ids[0].tolist())
    theirs = torch.tensor(np.array(llm.scores[:length]))
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))  # every greedy next token, the first one included
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    if not isinstance(spec, NoScaling):
        assert (ours - plain).abs().max() > 0.1  # the scaling matters at this length: the check has teeth
