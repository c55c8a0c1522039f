"""In-place forwards of RMSNorm and the gated MLP, for scoring without gradients.

transformers writes each step of these layers to a fresh tensor (the float32 copy, its square, the normalised
copy, its bf16 cast, the weighted result; the SiLU output, the gate product). Scoring a long sequence spends a
few percent of its time allocating and filling those buffers. The forwards here compute the same operations
in the same order and dtypes, reusing buffers, so the results are bit for bit transformers' (tested); measured
on SmolLM2 at 8k in bf16: 3-5% faster (BENCHMARKS.md, section 1).

Only classes whose forward is known to be the Llama one are switched (`RMSNORM_CLASSES`, `MLP_CLASSES`);
anything else keeps its own forward. In-place activations would break autograd, so `inplace_layers` switches
nothing while gradients are enabled.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# Classes whose forward is transformers' Llama RMSNorm: weight * (x.float() * rsqrt(mean(x^2) + eps)).to(dtype).
RMSNORM_CLASSES = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})
# Classes whose forward is down_proj(act_fn(gate_proj(x)) * up_proj(x)).
MLP_CLASSES = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})
# Activations that are F.silu (transformers' ACT2FN["silu"] is its own SiLUActivation class).
SILU_CLASSES = frozenset({"SiLU", "SiLUActivation"})


def rmsnorm_forward(self: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """transformers' Llama RMSNorm, reusing its float32 copy."""
    h = hidden.float()  # a copy for bf16 input, the input itself for float32: never modify that in place
    if h is hidden:
        h = h.clone()
    variance = h.square().mean(-1, keepdim=True)
    h.mul_(torch.rsqrt(variance.add_(self.variance_epsilon)))
    out = h.to(hidden.dtype)
    if out is not h and self.weight.dtype == out.dtype:
        return out.mul_(self.weight)
    return self.weight * out


def mlp_forward(self: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """down_proj(act(gate_proj(x)) * up_proj(x)), the activation and the product written over the gate."""
    gate = self.gate_proj(hidden)
    gate = F.silu(gate, inplace=True) if type(self.act_fn).__name__ in SILU_CLASSES else self.act_fn(gate)
    return self.down_proj(gate.mul_(self.up_proj(hidden)))


@contextlib.contextmanager
def inplace_layers(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Switch the model's Llama-style RMSNorm and MLP modules to the in-place forwards inside the block.

    Yields how many modules were switched (0 with gradients enabled or ``enabled=False``).
    """
    switched: list[nn.Module] = []
    if enabled and not torch.is_grad_enabled():
        for module in model.modules():
            name = type(module).__name__
            if "forward" in vars(module):  # someone else's per-instance forward: leave it alone
                continue
            if name in RMSNORM_CLASSES and hasattr(module, "variance_epsilon"):
                module.forward = types.MethodType(rmsnorm_forward, module)
            elif name in MLP_CLASSES and all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj")):
                module.forward = types.MethodType(mlp_forward, module)
            else:
                continue
            switched.append(module)
    try:
        yield len(switched)
    finally:
        for module in switched:
            del module.forward
