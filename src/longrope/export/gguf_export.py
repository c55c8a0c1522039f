"""Writing GGUFs for llama.cpp: rope factors added to a copy of an existing GGUF (any quantisation), or a new
GGUF converted from a transformers model (Llama, Mistral, Phi-3) and its tokenizer. Which tensors and keys
carry the rope: `longrope.export.gguf_rope`; reading files: `longrope.export.gguf_read`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from longrope.atomic import temporary_sibling
from longrope.errors import LongRopeError
from longrope.export.gguf_read import field_value, gguf_geometry, open_reader, read_metadata
from longrope.export.gguf_rope import _SCALING_KEYS, GgufRopePlan, plan_gguf_rope, rope_tensor_names
from longrope.rope import NoScaling, RopeSpec

# ------------------------------------------------------------------------------------------- writing GGUFs

def _check_target(out_path: Path, force: bool) -> None:
    if out_path.is_dir():
        raise LongRopeError(f"{out_path} is a directory; give a .gguf file path")
    if out_path.exists() and not force:
        raise LongRopeError(f"{out_path} exists; pass force=True (--force) to replace it")


def _write(writer_fill, arch: str, out_path: Path, alignment: int | None = None) -> Path:
    """Run ``writer_fill(writer)`` on a GGUFWriter for a temp sibling of ``out_path``, then rename it."""
    import gguf

    tmp = temporary_sibling(out_path)
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        if alignment:
            writer.data_alignment = alignment
        writer_fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(out_path)
    except BaseException:
        try:
            writer.close()
        finally:
            tmp.unlink(missing_ok=True)
        raise
    return out_path


def _add_plan(writer, plan: GgufRopePlan) -> None:
    import gguf

    for key, value in plan.keys.items():
        vtype = gguf.GGUFValueType.FLOAT32 if isinstance(value, float) else gguf.GGUFValueType.UINT32
        writer.add_key_value(key, value, vtype)
    for name, table in plan.tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(table, dtype=np.float32))


def add_rope_factors(gguf_path: str | Path, spec: RopeSpec, out_path: str | Path, target_window: int | None = None,
                     force: bool = False, lossy: bool = False, plan: GgufRopePlan | None = None) -> Path:
    """Copy ``gguf_path`` to ``out_path`` with ``spec`` as rope factors (weights copied byte for byte).

    Existing rope factor tensors and ``rope.scaling.*`` keys are replaced. Raises `LongRopeError` for a GGUF of a
    model without RoPE, an architecture whose llama.cpp graph ignores rope factors, or a spec that does not fit.
    ``plan``: the rope plan already made for this file and spec (`plan_gguf_rope`), so it is not made twice.
    """
    import gguf

    src, out_path = Path(gguf_path).expanduser(), Path(out_path).expanduser()
    if src.resolve() == out_path.resolve():
        raise LongRopeError("the output GGUF must be a different file from the input")
    _check_target(out_path, force)
    reader = open_reader(src)
    metadata = read_metadata(reader)
    if plan is None:
        arch, geometry = gguf_geometry(metadata)
        plan = plan_gguf_rope(arch, spec, geometry, target_window, lossy)
    arch = plan.arch
    owned = set(plan.keys) | {f"{arch}.rope.scaling.{k}" for k in _SCALING_KEYS} | {"general.architecture"}
    replaced = set(rope_tensor_names().values())

    def fill(writer) -> None:
        for name, f in reader.fields.items():
            if name.startswith("GGUF.") or name in owned:
                continue
            vtype = f.types[0]
            sub_type = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field_value(f), vtype, sub_type=sub_type)
        _add_plan(writer, plan)
        for tensor in reader.tensors:
            if tensor.name in replaced:
                continue
            writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)

    return _write(fill, arch, out_path, metadata.get("general.alignment"))


# -- a new GGUF from a transformers model ----------------------------------------------------------------------

def _permute_for_llama_cpp(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved pairs (what its llama converter does)."""
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _tokenizer_fields(tokenizer, vocab_size: int) -> dict[str, Any]:
    """GGUF tokenizer keys of a byte-level BPE ``tokenizers`` tokenizer (llama.cpp's 'gpt2' model)."""
    import json as _json

    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise LongRopeError("GGUF export needs a fast (tokenizers) tokenizer")
    data = _json.loads(backend.to_str())
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise LongRopeError(f"GGUF export supports byte-level BPE tokenizers, not {model.get('type')!r}")
    vocab = backend.get_vocab(with_added_tokens=True)
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for token, index in vocab.items():
        if index >= vocab_size:
            raise LongRopeError(f"tokenizer has token id {index} but the model's vocabulary is {vocab_size}")
        tokens[index] = token
        types[index] = gguf.TokenType.NORMAL
    for added in data.get("added_tokens", []):
        if added["id"] < vocab_size:
            types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    fields: dict[str, Any] = {"tokens": tokens, "types": [int(t) for t in types], "merges": merges}
    for name in ("bos", "eos", "pad", "unk"):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None:
            fields[name] = int(token_id)
    probe = tokenizer("a").input_ids if callable(tokenizer) else []
    fields["add_bos"] = bool(probe) and fields.get("bos") is not None and probe[0] == fields["bos"]
    fields["chat_template"] = getattr(tokenizer, "chat_template", None)
    return fields


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    fields = _tokenizer_fields(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    if fields["merges"]:
        writer.add_token_merges(fields["merges"])
    for name, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if name in fields:
            add(fields[name])
    writer.add_add_bos_token(fields["add_bos"])
    if isinstance(fields["chat_template"], str) and fields["chat_template"]:
        writer.add_chat_template(fields["chat_template"])


def _llama_tensors(state: dict[str, torch.Tensor], config) -> list[tuple[str, torch.Tensor]]:
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    out = [("token_embd.weight", state["model.embed_tokens.weight"])]
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(config.num_hidden_layers):
        for hf, gg in names.items():
            key = f"model.layers.{i}.{hf}.weight"
            if key not in state:
                raise LongRopeError(f"GGUF export: {key} missing from the model's weights")
            out.append((f"blk.{i}.{gg}.weight", state[key]))
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if f"model.layers.{i}.self_attn.{proj}.bias" in state:
                raise LongRopeError("GGUF export of attention biases is not supported (llama architecture only)")
    out.append(("output_norm.weight", state["model.norm.weight"]))
    if not getattr(config, "tie_word_embeddings", False):
        out.append(("output.weight", state["lm_head.weight"]))
    del heads, kv_heads
    return out


def _phi3_tensors(state: dict[str, torch.Tensor], config) -> list[tuple[str, torch.Tensor]]:
    out = [("token_embd.weight", state["model.embed_tokens.weight"])]
    names = {"input_layernorm": "attn_norm", "self_attn.qkv_proj": "attn_qkv", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(config.num_hidden_layers):
        for hf, gg in names.items():
            out.append((f"blk.{i}.{gg}.weight", state[f"model.layers.{i}.{hf}.weight"]))
    out.append(("output_norm.weight", state["model.norm.weight"]))
    if not getattr(config, "tie_word_embeddings", False):
        out.append(("output.weight", state["lm_head.weight"]))
    return out


GGUF_ARCH_OF_MODEL_TYPE = {"llama": "llama", "mistral": "llama", "phi3": "phi3"}


def write_gguf(model, tokenizer, spec: RopeSpec | None, out_path: str | Path, dtype: str = "f32",
               target_window: int | None = None, force: bool = False, lossy: bool = False,
               name: str | None = None, plan: GgufRopePlan | None = None) -> Path:
    """A new GGUF of a Llama / Mistral (``llama`` architecture) or Phi-3 (``phi3``) model with ``spec``'s factors.

    Weights are written in float32 (``dtype='f32'``) or float16 (``'f16'``; norms and rope factors stay
    float32). Q/K rows are permuted to llama.cpp's pair layout for ``llama``, as its own converter does. The
    tokenizer must be a byte-level BPE (written as ``tokenizer.ggml.model = gpt2``). ``plan``: the rope plan
    already made for this model and spec (`plan_gguf_rope`).
    """
    from longrope.attention.patch import current_spec
    from longrope.attention.rotary import model_geometry

    out_path = Path(out_path).expanduser()
    _check_target(out_path, force)
    if dtype not in ("f32", "f16"):
        raise LongRopeError(f"GGUF dtype must be f32 or f16, got {dtype!r}")
    spec = spec if spec is not None else (current_spec(model) or NoScaling())
    if isinstance(spec, (tuple, list)):
        raise LongRopeError("the model carries one spec per batch row; export needs exactly one spec")
    config = model.config
    model_type = getattr(config, "model_type", "")
    arch = GGUF_ARCH_OF_MODEL_TYPE.get(model_type)
    if arch is None:
        raise LongRopeError(
            f"writing a GGUF from a '{model_type}' model is not supported (llama, mistral, phi3 are); export the HF "
            "directory and convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    geometry = model_geometry(model)
    if plan is None:
        plan = plan_gguf_rope(arch, spec, geometry, target_window, lossy)
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    tensors = _llama_tensors(state, config) if arch == "llama" else _phi3_tensors(state, config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    np_dtype = np.float16 if dtype == "f16" else np.float32

    def fill(writer) -> None:
        import gguf

        # general.name matters to readers: llama.cpp gives vocabularies of models named *phi3* / *phi-3* special
        # token attributes (and looks up '<unk>' etc. to do so); transformers reads a llama GGUF named exactly
        # 'mistral' as Mistral. So no architecture in the default name.
        label = name or Path(str(getattr(config, "_name_or_path", "") or "")).name or "longrope-export"
        writer.add_name(label)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.num_attention_heads)
        writer.add_head_count_kv(config.num_key_value_heads)
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_rope_freq_base(float(geometry.base))
        writer.add_rope_dimension_count(geometry.dim)
        if head_dim != config.hidden_size // config.num_attention_heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_vocab_size(config.vocab_size)
        if arch == "phi3" and getattr(config, "sliding_window", None):
            writer.add_sliding_window(int(config.sliding_window))
        _add_plan(writer, plan)
        if tokenizer is not None:
            _add_tokenizer(writer, tokenizer, config.vocab_size)
        for gguf_name, tensor in tensors:
            array = tensor.float().numpy()
            if arch == "llama" and gguf_name.endswith((".attn_q.weight", ".attn_k.weight")):
                heads = config.num_attention_heads if ".attn_q." in gguf_name else config.num_key_value_heads
                array = _permute_for_llama_cpp(array, heads)
            array = array.astype(np_dtype if array.ndim > 1 else np.float32)
            writer.add_tensor(gguf_name, np.ascontiguousarray(array))

    return _write(fill, arch, out_path)


def export_gguf(spec: RopeSpec | None, out_path: str | Path, *, model=None, tokenizer=None,
                source_gguf: str | Path | None = None, dtype: str = "f32", target_window: int | None = None,
                force: bool = False, lossy: bool = False, plan: GgufRopePlan | None = None) -> Path:
    """Write a GGUF for llama.cpp carrying ``spec`` as rope factors.

    With ``source_gguf``: a copy of that file (any quantisation) with the factors added (`add_rope_factors`).
    Otherwise: a new f32/f16 file converted from ``model`` and ``tokenizer`` (`write_gguf`). ``plan``: the rope
    plan already made (`longrope.export.bundle.plan_export` passes its own), else it is made here.
    """
    if source_gguf is not None:
        if spec is None:
            raise LongRopeError("adding rope factors to a GGUF needs a spec")
        return add_rope_factors(source_gguf, spec, out_path, target_window, force, lossy, plan=plan)
    if model is None:
        raise LongRopeError("export_gguf needs a model or a source GGUF")
    return write_gguf(model, tokenizer, spec, out_path, dtype, target_window, force, lossy, plan=plan)
