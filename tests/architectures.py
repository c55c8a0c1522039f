"""Every RoPE decoder transformers ships, as tiny random models, and what longrope does with each.

`ARCHITECTURES` is the list `tests/attention/test_architectures.py` checks (exact against transformers' own
scaling, or refused with the reason given here) and README's "Supported architectures" table is generated from
(`python tests/architectures.py` prints it; a test keeps README in step). Models are built from transformers'
config classes with tiny sizes (2 layers, hidden 64, window 64): nothing is downloaded.
"""

from __future__ import annotations

import copy
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

LONG = tuple(1.0 + 0.4 * i for i in range(8))
SHORT = tuple(1.0 + 0.02 * i for i in range(8))


@dataclass(frozen=True)
class Architecture:
    """One model type and what longrope does with it.

    config: constructor arguments beyond `COMMON`. native: the scalings checked against transformers' own
    (``pi``, ``yarn``, ``longrope``: those the config accepts). refused: the start of the one-line refusal
    (None: exact). family: the README name. note: what is special about it.
    """

    model_type: str
    family: str
    config: dict = field(default_factory=dict)
    native: tuple[str, ...] = ("pi", "yarn", "longrope")
    refused: str | None = None
    note: str = ""

    @property
    def exact(self) -> bool:
        return self.refused is None


def native_parameters(method: str, pairs: int = 8) -> dict:
    """transformers' ``rope_parameters`` for a scaling at 4x the tiny window (rope_theta added by the caller)."""
    long, short = [LONG[i % 8] for i in range(pairs)], [SHORT[i % 8] for i in range(pairs)]
    return {
        "pi": {"rope_type": "linear", "factor": 4.0},
        "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": WINDOW},
        "longrope": {"rope_type": "longrope", "factor": 4.0, "long_factor": long, "short_factor": short,
                     "original_max_position_embeddings": WINDOW},
    }[method]


def native_spec(method: str, pairs: int = 8):
    from longrope.rope import LinearSpec, LongRopeSpec, YarnSpec

    long, short = [LONG[i % 8] for i in range(pairs)], [SHORT[i % 8] for i in range(pairs)]
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
        entry["rope_type"] = "default"
        if "original_max_position_embeddings" in entry:  # read beside RoPE by some (Ministral 3's query scaling)
            entry["original_max_position_embeddings"] = WINDOW
    config.rope_parameters = params


def tiny_config(arch: Architecture, native: str | None = None, window: int = WINDOW):
    """The tiny config of ``arch`` with plain RoPE, or with transformers' own ``native`` scaling on the layers a
    spec scales by default (the full attention layer type of per-layer-type configs)."""
    from longrope.rope.geometry import default_layer_type, rope_layer_types

    cls = _config_class(arch.model_type)
    default = cls()
    kwargs = {k: v for k, v in COMMON.items() if _settable(default, k)}
    if "kv_lora_rank" in kwargs:  # multi-head latent attention: one key/value head per query head
        kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
    kwargs.update(arch.config)
    kwargs["max_position_embeddings"] = window
    config = cls(**kwargs)
    if hasattr(config, "original_max_position_embeddings"):  # Phi-3 reads it in preference to rope_parameters
        config.original_max_position_embeddings = WINDOW
    plain_rope(config)
    if native is not None:
        nested = rope_layer_types(config)
        target = default_layer_type(config) if nested else None
        params = copy.deepcopy(config.rope_parameters)
        entry = params[target] if target else params
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        pairs = int(head_dim * entry.get("partial_rotary_factor", 1.0)) // 2
        entry.update(native_parameters(native, pairs))
        config.rope_parameters = params
    config._attn_implementation = "eager"
    return config


def tiny_model(arch: Architecture, native: str | None = None, seed: int = 0, window: int = WINDOW):
    """A tiny random model of ``arch`` (float32, eval mode); same ``seed``, same weights."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, native, window))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)  # larger than the default init: position effects show in the logits
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
ARCHITECTURES: list[Architecture] = [
    A("llama", "Llama 2/3"),
]


def readme_table(architectures: list[Architecture] | None = None) -> str:
    """README's "Supported architectures" table, one row per architecture of the list."""
    rows = ["| model type | family | longrope | checked against transformers | note |", "|---|---|---|---|---|"]
    for arch in architectures or ARCHITECTURES:
        if arch.exact:
            result = "exact"
            checked = "plain RoPE" + "".join(f", {m}" for m in arch.native)
        else:
            result = f"refused: {arch.refused}"
            checked = "refusal"
        note = re.sub(r"\s+", " ", arch.note)
        rows.append(f"| `{arch.model_type}` | {arch.family} | {result} | {checked} | {note} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())
