"""Every RoPE decoder transformers ships, as tiny random models, and what longrope does with each.

`ARCHITECTURES` is the list `tests/attention/test_architectures.py` checks (exact against transformers' own
scaling, or refused with the reason given here) and README's "Supported architectures" table is generated from
(`python tests/architectures.py` prints it; a test keeps README in step). Models are built from transformers'
config classes with tiny sizes (2 layers, hidden 64, window 64): nothing is downloaded.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field

import torch

WINDOW = 64
LENGTH = 256  # tokens of the compared logits: 4x the window
VOCAB = 97

# Sizes every config gets when its class has the field (MoE, MLA and hybrid fields included).
COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=WINDOW, pad_token_id=0, bos_token_id=1,
    eos_token_id=2, num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2,
    moe_intermediate_size=32, shared_expert_intermediate_size=32, sliding_window=32, kv_lora_rank=16,
    qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=16, first_k_dense_replace=1, n_group=1, topk_group=1,
    n_shared_experts=1, intermediate_size_mlp=128, ffn_hidden_size=128,
)

# Sizes of a multimodal model's other towers (vision, audio), when their config class has the field.
TOWER = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
             head_dim=8, depth=1, num_heads=2, image_size=28, patch_size=14, num_global_layers=1, attention_heads=2,
             vision_output_dim=16, projector_input_dim=16, projector_output_dim=16, out_hidden_size=64,
             num_blocks=1, num_layers=1)

LONGROPE_M = math.sqrt(1 + math.log(4.0) / math.log(WINDOW))  # LongRoPE's attention factor at 4x
LONG = tuple(1.0 + 0.4 * i for i in range(8))
SHORT = tuple(1.0 + 0.02 * i for i in range(8))


@dataclass(frozen=True)
class Architecture:
    """One model type and what longrope does with it.

    config: constructor arguments beyond `COMMON`. native: the scalings checked against transformers' own
    (``pi``, ``yarn``, ``longrope``: those the config accepts). native_keys: extra ``rope_parameters`` keys the
    model's own module requires for them. one_table: its longrope reads only one factor table (short = long).
    refused: the start of the one-line refusal (None: exact). family: the README name. note: what is special.
    length: tokens compared (models whose own module stops at max_position_embeddings: the window).
    skip: why it is not built here (it is listed, and README says so). fill: parameters (by name suffix) set
    to a value after the random init, where a zero init would hide the positions (ZAYA's q/k temperature).
    loss: the start of the refusal of longrope's chunked loss (eval, search, fine-tuning), where it has one.
    """

    model_type: str
    family: str
    config: dict = field(default_factory=dict)
    native: tuple[str, ...] = ("pi", "yarn", "longrope")
    refused: str | None = None
    note: str = ""
    native_keys: dict = field(default_factory=dict)
    one_table: bool = False
    length: int = LENGTH
    skip: str | None = None
    fill: dict = field(default_factory=dict)
    loss: str | None = None

    @property
    def exact(self) -> bool:
        return self.refused is None and self.skip is None


def _factors(pairs: int, one_table: bool) -> tuple[list[float], list[float]]:
    long = [LONG[i % 8] for i in range(pairs)]
    return long, list(long) if one_table else [SHORT[i % 8] for i in range(pairs)]


def native_parameters(method: str, pairs: int = 8, one_table: bool = False) -> dict:
    """transformers' ``rope_parameters`` for a scaling at 4x the tiny window (rope_theta added by the caller)."""
    long, short = _factors(pairs, one_table)
    return {
        "pi": {"rope_type": "linear", "factor": 4.0},
        "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": WINDOW},
        "longrope": {"rope_type": "longrope", "factor": 4.0, "long_factor": long, "short_factor": short,
                     "original_max_position_embeddings": WINDOW},
    }[method]


def native_spec(method: str, pairs: int = 8, one_table: bool = False):
    """Our spec of `native_parameters`."""
    from longrope.rope import LinearSpec, LongRopeSpec, YarnSpec

    long, short = _factors(pairs, one_table)
    return {"pi": LinearSpec(factor=4.0), "yarn": YarnSpec(factor=4.0),
            "longrope": LongRopeSpec(long_factor=long, short_factor=short, factor=4.0)}[method]


def _config_class(model_type: str):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return CONFIG_MAPPING[model_type]


def _settable(default, key: str) -> bool:
    if key in default.to_dict():
        return True
    return hasattr(default, key) and not isinstance(getattr(type(default), key, None), property)


# Keys of rope_parameters that belong to a scaling (what stays: rope_theta, partial_rotary_factor and keys other
# parts of the model read, such as Ministral 3's llama_4_scaling_beta).
SCALING_KEYS = ("type", "factor", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
                "truncate", "short_factor", "long_factor", "low_freq_factor", "high_freq_factor", "short_mscale",
                "long_mscale")


GEOMETRY_TYPES = ("proportional",)  # rope_types that are a form of RoPE rather than a scaling: kept


def plain_rope(config) -> None:
    """Make every RoPE entry of ``config`` plain RoPE (``default``), keeping its base and partial rotary factor:
    the model a spec is applied to, with no scaling of its own."""
    from longrope.rope.geometry import rope_layer_types

    params = copy.deepcopy(getattr(config, "rope_parameters", None) or {})
    nested = rope_layer_types(config)
    entries = [params[t] for t in nested if params.get(t) is not None] if nested else [params]
    for entry in entries:
        for key in SCALING_KEYS:
            entry.pop(key, None)
        if entry.get("rope_type") not in GEOMETRY_TYPES:
            entry["rope_type"] = "default"
        if "original_max_position_embeddings" in entry:  # read beside RoPE by some (Ministral 3's query scaling)
            entry["original_max_position_embeddings"] = WINDOW
    config.rope_parameters = params


def tiny_config(arch: Architecture, native: str | None = None, window: int = WINDOW):
    """The tiny config of ``arch`` with plain RoPE, or with transformers' own ``native`` scaling on the layers a
    spec scales by default (the full attention layer type of per-layer-type configs)."""
    from longrope.rope.geometry import default_layer_type, rope_layer_types

    cls = _config_class(arch.model_type)
    text_cls = (getattr(cls, "sub_configs", None) or {}).get("text_config")
    if text_cls is not None:  # a multimodal model: the tiny sizes go to its text part, small ones to the others
        kwargs = dict(arch.config)
        kwargs["text_config"] = {**_tiny_kwargs(text_cls, window), **arch.config.get("text_config", {})}
        for name, sub in cls.sub_configs.items():
            if name != "text_config" and sub.__name__ != "AutoConfig":
                default = sub()
                kwargs[name] = {**{k: v for k, v in TOWER.items() if _settable(default, k)},
                                **arch.config.get(name, {})}
    else:
        kwargs = {**_tiny_kwargs(cls, window), **arch.config}
        kwargs["max_position_embeddings"] = window
    config = cls(**kwargs)
    text = config.get_text_config()
    if hasattr(text, "original_max_position_embeddings"):  # Phi-3 reads it in preference to rope_parameters
        text.original_max_position_embeddings = WINDOW
    plain_rope(text)
    if native is not None:
        nested = rope_layer_types(text)
        target = default_layer_type(text) if nested else None
        params = copy.deepcopy(text.rope_parameters)
        entry = params[target] if target else params
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        pairs = int(head_dim * entry.get("partial_rotary_factor", 1.0)) // 2
        entry.update(native_parameters(native, pairs, arch.one_table))
        entry.update(arch.native_keys)
        text.rope_parameters = params
    config._attn_implementation = "eager"
    return config


def _tiny_kwargs(cls, window: int) -> dict:
    default = cls()
    kwargs = {k: v for k, v in COMMON.items() if _settable(default, k)}
    if "kv_lora_rank" in kwargs:  # multi-head latent attention: one key/value head per query head
        kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
    kwargs["max_position_embeddings"] = window
    return kwargs


def tiny_model(arch: Architecture, native: str | None = None, seed: int = 0, window: int = WINDOW):
    """A tiny random model of ``arch`` (float32, eval mode); same ``seed``, same weights."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, native, window))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)  # larger than the default init: position effects show in the logits
        for name, p in model.named_parameters():
            for suffix, value in arch.fill.items():
                if name.endswith(suffix):
                    p.fill_(value)
    return model.float().eval()


def rotary_decoders() -> list[str]:
    """Every model type of the installed transformers with a causal-LM class and a rotary module."""
    import glob
    import os

    import transformers
    from transformers.models.auto.configuration_auto import model_type_to_module_name
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    root = os.path.join(os.path.dirname(transformers.__file__), "models")
    found = []
    for model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        files = glob.glob(os.path.join(root, model_type_to_module_name(model_type), "modeling_*.py"))
        if any("RotaryEmbedding" in open(f).read() for f in files):
            found.append(model_type)
    return found


A = Architecture
LT2 = {"layer_types": ["sliding_attention", "full_attention"]}  # one layer of each type
HYBRID = {"layer_types": ["linear_attention", "full_attention"]}  # one linear-attention layer, one attention layer
SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
GEMMA3N = {"layer_types": ["sliding_attention", "full_attention"], "vocab_size_per_layer_input": VOCAB,
           "hidden_size_per_layer_input": 8, "num_kv_shared_layers": 0, "activation_sparsity_pattern": [0.0, 0.0],
           "laurel_rank": 8, "altup_num_inputs": 2}
GEMMA4 = {"layer_types": ["sliding_attention", "full_attention"], "vocab_size_per_layer_input": VOCAB,
          "hidden_size_per_layer_input": 8, "global_head_dim": 32}
DOTS = {"q_lora_rank": 16, "head_dim": 32, "layer_types": ["sliding_attention", "indexed_attention"],
        "mlp_layer_types": ["dense", "sparse"], "index_head_dim": 16, "index_n_heads": 2, "per_layer_config": {}}
QWEN4 = {"layer_types": ["linear_attention", "indexed_attention"], "indexer_n_heads": 2, "indexer_kv_heads": 1,
         "indexer_head_dim": 16, "indexer_budget": 16, "indexer_compress_ratio": 4}
ARCHITECTURES: list[Architecture] = [
    A("afmoe", "AFMoE", LT2, note="RoPE in the sliding layers, NoPE global"),
    A("apertus", "Apertus"),
    A("apertus1p5_text", "Apertus 1.5 (text)"),
    A("arcee", "Arcee (AFM)"),
    A("aria_text", "Aria (text)"),
    A("axk1", "A.X K1", note="multi-head latent attention"),
    A("axk2", "A.X K2", note="multi-head latent attention"),
    A("bailing_hybrid", "Bailing hybrid (Ling)", {**HYBRID, "mlp_layer_types": ["dense", "dense"]},
      note="RoPE in the attention layers only"),
    A("bamba", "Bamba", {"attn_layer_indices": [1]}, length=96, native=("yarn",),
      note="Mamba 2 + attention; RoPE in the attention layers (96 tokens: its Mamba layers are slow on CPU)"),
    A("beam", "BEAM", LT2, note="RoPE in the sliding layers, NoPE global layers"),
    A("bitnet", "BitNet"),
    A("blt", "BLT (byte latent transformer)", {"encoder_hash_byte_group_vocab": VOCAB, "encoder_config": SMALL,
      "decoder_config": SMALL, "global_config": {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2},
      "patcher_config": SMALL}, refused="BLT (byte latent transformer) runs three transformers"),
    A("codegen", "CodeGen", {"rotary_dim": 8}, native=(), length=WINDOW,
      note="(sin, cos) per pair from a table precomputed to max_position_embeddings; no native scaling"),
    A("cohere", "Cohere (Command R)", note="interleaved pairs"),
    A("cohere2", "Cohere 2 (Command R7B, A)", LT2, note="interleaved pairs; RoPE in the sliding layers, NoPE global"),
    A("cohere_compass_text", "Cohere Compass (text)", {**LT2, "rope_parameters": {
      "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
      "full_attention": {"rope_type": "default", "rope_theta": 1e6}}}, note="RoPE per layer type"),
    A("cohere2_moe", "Cohere 2 MoE", LT2, note="interleaved pairs; RoPE in the sliding layers, NoPE global"),
    A("cwm", "CWM"),
    A("dbrx", "DBRX", {"attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0}, "d_model": 64,
      "n_heads": 4, "n_layers": 2, "ffn_config": {"ffn_hidden_size": 64, "moe_num_experts": 2, "moe_top_k": 1}}),
    A("deepseek_v2", "DeepSeek-V2", note="complex freqs_cis; multi-head latent attention"),
    A("deepseek_v3", "DeepSeek-V3 / R1", note="multi-head latent attention"),
    A("deepseek_v32", "DeepSeek-V3.2", length=128, note="multi-head latent attention, sparse indexer"),
    A("deepseek_v4", "DeepSeek-V4", refused="DeepseekV4ForCausalLM keeps RoPE tables under labels that are not its "
      "layer types (main, compress", note="per-pair cos/sin, compressed sparse attention"),
    A("diffllama", "DiffLlama"),
    A("doge", "Doge"),
    A("dory", "Dory", {"num_hidden_layers": 4, "n_input_layers": 1, "n_recurrent_layers": 2, "n_output_layers": 1,
      "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]},
      note="RoPE per layer type; recurrent middle layers"),
    A("dots1", "dots.llm1"),
    A("dots3_note", "dots.llm3 Note (multimodal)", {"text_config": DOTS,
      "vision_config": {"per_layer_config": {}, "adapter_in_dim": 16, "adapter_out_dim": 64},
      "audio_config": {"per_layer_config": {}, "adapter_input_size": 16, "adapter_output_size": 64}},
      note="RoPE per layer type; multi-head latent attention; the text model of a multimodal one"),
    A("dots3_note_text", "dots.llm3 Note (text)", DOTS, note="RoPE per layer type; multi-head latent attention"),
    A("emu3", "Emu3", note="the text model of a multimodal one"),
    A("ernie4_5", "ERNIE 4.5"),
    A("ernie4_5_moe", "ERNIE 4.5 MoE"),
    A("exaone4", "EXAONE 4", LT2, note="NoPE global layers when sliding"),
    A("exaone_moe", "EXAONE MoE", LT2, note="NoPE global layers when sliding"),
    A("falcon", "Falcon (rotary)", {"alibi": False}),
    A("falcon_h1", "Falcon-H1", length=96, native=("yarn",), note="Mamba 2 + attention in every layer"),
    A("flex_olmo", "FlexOlmo"),
    A("flint", "Flint", LT2, note="RoPE in the sliding layers, NoPE global"),
    A("gemma", "Gemma"),
    A("gemma2", "Gemma 2"),
    A("gemma3", "Gemma 3 (multimodal: 4B, 12B, 27B)", {"text_config": LT2, "mm_tokens_per_image": 4,
      "vision_config": {"model_type": "siglip_vision_model", **SMALL, "image_size": 28, "patch_size": 14}},
      note="what AutoModelForCausalLM loads for Gemma 3 checkpoints; RoPE per layer type, the full-attention "
      "layers scaled"),
    A("gemma3n", "Gemma 3n (multimodal)", {"text_config": GEMMA3N}, skip="its vision tower needs the timm "
      "package (not installed here); its text model gemma3n_text is checked"),
    A("gemma3n_text", "Gemma 3n (text)", GEMMA3N, note="RoPE per layer type"),
    A("gemma4", "Gemma 4 (multimodal)", {"text_config": GEMMA4},
      refused="Gemma4ForConditionalGeneration (full_attention layers): rope_type 'proportional' is not supported"),
    A("gemma4_text", "Gemma 4 (text)", GEMMA4,
      refused="Gemma4ForCausalLM (full_attention layers): rope_type 'proportional' is not supported"),
    A("gemma4_unified", "Gemma 4 unified (multimodal)", {"text_config": GEMMA4},
      refused="Gemma4UnifiedForConditionalGeneration (full_attention layers): rope_type 'proportional'"),
    A("gemma4_unified_text", "Gemma 4 unified (text)", GEMMA4,
      refused="Gemma4UnifiedForCausalLM (full_attention layers): rope_type 'proportional' is not supported"),
    A("gemma3_text", "Gemma 3 (text)", LT2,
      note="RoPE per layer type: a spec scales the full-attention layers, sliding layers keep theirs"),
    A("glm", "GLM"),
    A("glm4", "GLM-4"),
    A("glm4_moe", "GLM-4.5 MoE"),
    A("glm4_moe_lite", "GLM-4.7 Flash", note="multi-head latent attention"),
    A("glm_moe_dsa", "GLM-5", length=128, note="multi-head latent attention, sparse indexer"),
    A("gpt_neox", "GPT-NeoX / Pythia", note="partial rotary"),
    A("gpt_neox_japanese", "GPT-NeoX Japanese", note="partial rotary"),
    A("gpt_oss", "gpt-oss", note="per-pair cos/sin"),
    A("gptj", "GPT-J", {"rotary_dim": 8}, native=(), length=WINDOW,
      note="(sin, cos) per pair from a table precomputed to max_position_embeddings; no native scaling"),
    A("granite", "Granite 3"),
    A("granite_swa", "Granite SWA", LT2, note="rotary module per base (layer_rope_theta; 0 = NoPE)"),
    A("granitemoe", "Granite MoE"),
    A("granitemoe_swa", "Granite MoE SWA", LT2, note="rotary module per base (layer_rope_theta; 0 = NoPE)"),
    A("granitemoehybrid", "Granite 4 hybrid", {"layer_types": ["mamba", "attention"],
                                                "position_embedding_type": "rope"},
      length=96, native=("yarn",),
      note="Mamba 2 + attention, with position_embedding_type='rope' (without it: no RoPE, refused)"),
    A("granitemoeshared", "Granite MoE shared"),
    A("helium", "Helium"),
    A("hrm_text", "HRM (text)"),
    A("hunyuan_v1_dense", "Hunyuan dense"),
    A("hunyuan_v1_moe", "Hunyuan MoE"),
    A("hy_v3", "HY v3"),
    A("hy_v4", "HY v4"),
    A("hyperclovax", "HyperCLOVA X"),
    A("inkling2_text", "Inkling 2 (text)", {"layer_types": ["hybrid_sliding", "hybrid"], "swa_head_dim": 16,
      "swa_num_attention_heads": 4, "swa_num_key_value_heads": 2, "n_layers_per_attn_res_block": 1},
      refused="Inkling2ForCausalLM has no rotary position embedding", note="only its vision tower has RoPE"),
    A("jais2", "Jais 2"),
    A("jetmoe", "JetMoE"),
    A("kolibri1", "Kolibri", LT2, note="NoPE global layers when sliding"),
    A("laguna", "Laguna"),
    A("lara_mini", "Lara mini"),
    A("lfm2_moe", "LFM2 MoE", {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
      note="convolutions + attention"),
    A("lfm3", "LFM3", {"layer_types": ["sliding_attention", "full_attention"]},
      refused="Lfm3ForCausalLM (full_attention layers): rope_type 'proportional' is not supported"),
    A("lfm2", "LFM2", {"layer_types": ["conv", "full_attention"]}, note="convolutions + attention"),
    A("llama", "Llama 2/3"),
    A("llama4", "Llama 4 (multimodal: Scout, Maverick)", {"text_config": {"no_rope_layers": [1, 0]}},
      note="complex freqs_cis; NoPE layers; the text model of a multimodal one"),
    A("longcat_flash", "LongCat-Flash", {"num_layers": 1, "q_lora_rank": 16},
      note="multi-head latent attention; two attention blocks per layer"),
    A("llama4_text", "Llama 4 (text)", {"no_rope_layers": [1, 0]},
      note="complex freqs_cis; NoPE layers (no_rope_layers)"),
    A("mellum", "Mellum"),
    A("mimo_v2_flash", "MiMo-V2-Flash", {"head_dim": 48, "v_head_dim": 16,
      "layer_types": ["full_attention", "sliding_attention"], "mlp_layer_types": ["dense", "sparse"]},
      note="RoPE per layer type; partial rotary"),
    A("minicpm3", "MiniCPM3", note="multi-head latent attention"),
    A("minimax", "MiniMax-01", note="lightning attention + softmax attention"),
    A("minimax_m2", "MiniMax-M2"),
    A("minimax_m3_vl_text", "MiniMax-M3 (text)"),
    A("ministral", "Ministral"),
    A("ministral3", "Ministral 3 / Mistral 3", note="position-dependent query scaling (llama_4_scaling_beta) kept"),
    A("mistral", "Mistral"),
    A("mixtral", "Mixtral"),
    A("mllama", "Llama 3.2 Vision", {"text_config": {"cross_attention_layers": [1]}},
      note="the text model of a multimodal one; cross-attention layers"),
    A("modernbert-decoder", "ModernBERT decoder", loss="ModernBertDecoderForCausalLM's logits are not its output head",
      note="RoPE per layer type; its prediction head (dense + norm before the output embedding) is not in the "
      "chunked loss: eval, search and fine-tuning refuse it"),
    A("moshi", "Moshi"),
    A("nanochat", "nanochat"),
    A("nemotron", "Nemotron", note="partial rotary"),
    A("olmo", "OLMo"),
    A("olmo2", "OLMo 2"),
    A("olmo3", "OLMo 3", LT2, note="RoPE per layer type"),
    A("olmo_hybrid", "OLMo hybrid", HYBRID, note="RoPE in the attention layers only"),
    A("olmoe", "OLMoE"),
    A("persimmon", "Persimmon", note="partial rotary"),
    A("phi", "Phi-1/2", note="partial rotary"),
    A("phi3", "Phi-3 / Phi-4", native=("pi", "yarn", "longrope")),
    A("phi4_multimodal", "Phi-4 multimodal", {"vision_config": {**SMALL, "image_size": 28, "patch_size": 14},
      "audio_config": {**SMALL, "num_blocks": 1, "depthwise_seperable_out_channel": 16, "ext_pw_out_channel": 16,
                       "nemo_conv_channels": 16, "downsample_rate": 2, "input_size": 16}}),
    A("phimoe", "Phi-3.5-MoE", native=("longrope",), one_table=True,
      native_keys={"short_mscale": LONGROPE_M, "long_mscale": LONGROPE_M},
      note="its own module needs short_mscale/long_mscale and always reads short_factor (export writes both)"),
    A("qwen2", "Qwen2 / Qwen2.5"),
    A("qwen2_moe", "Qwen2 MoE"),
    A("qwen3", "Qwen3"),
    A("qwen3_5", "Qwen3.5 (multimodal)", {"text_config": HYBRID},
      note="interleaved multimodal RoPE: text positions scaled, image/video grids refused at run time"),
    A("qwen3_5_moe", "Qwen3.5 MoE (multimodal)", {"text_config": HYBRID},
      note="interleaved multimodal RoPE: text positions scaled, image/video grids refused at run time"),
    A("qwen3_5_moe_text", "Qwen3.5 MoE (text)", HYBRID, note="gated DeltaNet + attention; partial rotary"),
    A("qwen3_5_text", "Qwen3.5 (text)", HYBRID, note="gated DeltaNet + attention; partial rotary"),
    A("qwen3_moe", "Qwen3 MoE"),
    A("qwen3_next", "Qwen3-Next", HYBRID, note="gated DeltaNet + attention; partial rotary"),
    A("qwen4_exp", "Qwen4 exp (multimodal)", {"text_config": QWEN4}, length=128),
    A("qwen4_exp_text", "Qwen4 exp (text)", QWEN4, length=128),
    A("recurrent_gemma", "RecurrentGemma", {"block_types": ["recurrent", "attention"]}, native=(),
      note="RG-LRU + local attention; its rotary module accepts no rope_type but default"),
    A("seed_oss", "Seed-OSS"),
    A("zamba2", "Zamba2", {"use_mem_rope": True, "layers_block_type": ["mamba", "hybrid"], "hybrid_layer_ids": [1],
      "mamba_headdim": 16, "n_mamba_heads": 8, "attention_head_dim": 16},
      note="with use_mem_rope=True (without it: no RoPE, refused)"),
    A("zaya", "ZAYA", {"num_experts_per_tok": 1, "layer_types": ["hybrid", "hybrid_sliding"]},
      fill={"qk_norm.temp": 1.0}, note="RoPE per layer type"),
    A("smollm3", "SmolLM3", {"num_hidden_layers": 4}, note="NoPE every 4th layer"),
    A("solar_open", "Solar Open"),
    A("stablelm", "StableLM", note="partial rotary"),
    A("starcoder2", "StarCoder2"),
    A("vaultgemma", "VaultGemma"),
    A("youtu", "Youtu-LLM", note="multi-head latent attention"),
]


def readme_table(architectures: list[Architecture] | None = None) -> str:
    """README's "Supported architectures" table, one row per architecture of the list."""
    rows = ["| model type | family | longrope | checked against transformers | note |", "|---|---|---|---|---|"]
    for arch in sorted(architectures or ARCHITECTURES, key=lambda a: a.model_type):
        if arch.skip:
            result, checked = "not tried here", arch.skip
        elif arch.exact:
            result = "exact"
            checked = "plain RoPE" + "".join(f", {m}" for m in arch.native)
            if arch.length != LENGTH:
                checked += f" ({arch.length} tokens)"
        else:
            result = f"refused: {arch.refused}..."
            checked = "refusal"
        note = re.sub(r"\s+", " ", arch.note)
        rows.append(f"| `{arch.model_type}` | {arch.family} | {result} | {checked} | {note} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())
