"""transformers' attention-implementation switch, shared by the blocked and STRING attention functions.

transformers dispatches attention through ``AttentionInterface`` by the name in ``config._attn_implementation``;
these helpers find the modules that dispatch that way and switch a whole model (its config and each attention
module's) to another registered name.
"""

from __future__ import annotations

from torch import nn


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Attention modules that dispatch through transformers' AttentionInterface (they carry a config)."""
    return [m for m in model.modules()
            if type(m).__name__.endswith("Attention") and hasattr(m, "config") and hasattr(m, "layer_idx")]


def set_attention_implementation(model: nn.Module, name: str) -> None:
    """Switch every config of ``model`` (the model's and each attention module's) to ``name``."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(name)
    if model.config._attn_implementation != name:
        model.config._attn_implementation_internal = name
    for m in attention_modules(model):
        if m.config._attn_implementation != name:
            m.config._attn_implementation_internal = name
