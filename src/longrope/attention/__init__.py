"""Scaled RoPE inside a live transformers model, and the attention functions that go with it.

Modules, bottom to top (a module imports only those listed before it):

- `interface`: find the attention modules, switch a model's ``attn_implementation``;
- `rotary`: `ScaledRotaryEmbedding` (the tables of a `RopeSpec`, in the layout of the module it replaces),
  `find_rotary_modules`, `model_geometry` (a thin call into `model_rope`);
- `model_rope`: what a model's RoPE is (rotary modules, layouts, layer types, NoPE layers), read and checked;
- `blocked`: bf16 blocked causal attention for scoring long sequences on CPU (`scoring_attention`);
- `string`: STRING attention (arXiv 2410.18745), installed on a model whose rotary module is scaled;
- `patch`: `apply` / `restore` / `current_spec` / `sequence_length`, the public way to scale a model.

The public functions are re-exported here: ``from longrope.attention import apply, restore, sequence_length``.
"""

from longrope.attention.model_rope import ModelRope
from longrope.attention.patch import apply, current_spec, restore, sequence_length
from longrope.attention.rotary import ScaledRotaryEmbedding, model_geometry

__all__ = ["ModelRope", "ScaledRotaryEmbedding", "apply", "current_spec", "model_geometry", "restore",
           "sequence_length"]
