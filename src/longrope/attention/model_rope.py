"""What a model's RoPE is, read from the model: its rotary modules, their layout, the layer types they serve, the
geometry of each table, which layers use RoPE at all, and what a spec scales by default.

`model_rope(model)` returns a `ModelRope`, or raises `LongRopeError` naming the reason longrope cannot scale the
model exactly: positions that are not RoPE (ALiBi Falcon, GPT-2's learned positions, all-NoPE configs), a RoPE
variant we do not reproduce (an unknown ``rope_type``), or a rotary module whose tables our replacement does not
match. The last is checked, not assumed: each module is called on a few positions inside the window and its
output compared with `ScaledRotaryEmbedding` for the model's own scaling, in the layout the module wrote.

Layer types (Gemma 3, Olmo 3, ModernBERT-decoder, ...): a config with one ``rope_parameters`` entry per layer
type has one table per type; a spec scales the full / global attention layers by default (as Gemma 3's own
long-context scaling does) and the sliding-window layers keep theirs, since their window lies inside the
original one. A flat config has one table, used by every RoPE layer.

NoPE layers (SmolLM3, Llama 4, Cohere 2's global layers, ...) take no position embedding; they stay so, and
`ModelRope.rope_layers` / `ModelRope.nope_layers` say which layers are which.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from longrope.attention.rotary import (
    COMPLEX,
    HALF,
    INTERLEAVED,
    PAIRS,
    SIN_COS_PAIRS,
    ScaledRotaryEmbedding,
    find_rotary_modules,
)
from longrope.errors import LongRopeError
from longrope.rope import RopeGeometry, RopeSpec, from_rope_parameters
from longrope.rope.geometry import default_layer_type, layer_rope_parameters, rope_layer_types

PROBE_TOLERANCE = 1e-5  # max |table difference| between a model's rotary module and ours, inside the window


# model_type -> fn(config) -> why the model's positions are not (only) RoPE, or None. Checked before anything else.
def _falcon(config) -> str | None:
    if getattr(config, "alibi", False):
        return ("falcon with alibi=True adds ALiBi attention biases and never calls its rotary module: there is no "
                "RoPE to scale (ALiBi models extrapolate by their own biases)")
    return None


def _blt(config) -> str | None:
    return ("BLT (byte latent transformer) runs three transformers with RoPE of their own (byte-level local "
            "encoder and decoder, a patch-level global one): a spec is made for one; not supported")


REFUSALS: dict[str, Callable[[object], str | None]] = {"falcon": _falcon, "blt": _blt}


# How a model's layers go without RoPE, by mechanism; each returns the indices of those layers.
def _no_rope_layers(config) -> set[int]:
    """``no_rope_layers[i] == 0``: layer i takes no RoPE (SmolLM3, Llama 4, Mistral Large 3)."""
    flags = getattr(config, "no_rope_layers", None)
    if not isinstance(flags, (list, tuple)):
        return set()
    return {i for i, use in enumerate(flags) if not use}


def _nope_layer_types(config) -> set[int]:
    """A layer type whose ``rope_parameters`` entry is None takes no RoPE."""
    types = list(getattr(config, "layer_types", None) or ())
    nested = rope_layer_types(config)
    return {i for i, t in enumerate(types) if t in nested and layer_rope_parameters(config, t) is None}


NOT_ATTENTION = ("linear", "mamba", "conv", "recurrent", "ssm", "delta", "rnn", "mlp_only")


def _not_attention(config) -> set[int]:
    """Hybrid models: layers that are not softmax attention (Mamba, linear attention, convolutions) use no RoPE."""
    types = list(getattr(config, "layer_types", None) or ())
    return {i for i, t in enumerate(types) if isinstance(t, str) and any(mark in t for mark in NOT_ATTENTION)}


def _zero_theta(config) -> set[int]:
    """Granite SWA: a per-layer base of 0 in ``layer_rope_theta`` means NoPE."""
    thetas = getattr(config, "layer_rope_theta", None)
    if not isinstance(thetas, (list, tuple)):
        return set()
    return {i for i, theta in enumerate(thetas) if not theta}


def _global_nope(config) -> set[int]:
    """Hybrid models whose global (full-attention) layers use no RoPE, only the sliding ones do: Cohere 2 (but its
    MoE's dense prefix layers, with ``force_rope``), BEAM, AFMoE and Flint always, EXAONE 4 / EXAONE-MoE / Kolibri
    when ``sliding_window`` is set (their attention rotates only
    ``if self.sliding_window is None or self.is_sliding``)."""
    if config.model_type in SLIDING_ONLY_IF_WINDOW and getattr(config, "sliding_window", None) is None:
        return set()
    types = list(getattr(config, "layer_types", None) or ())
    found = {i for i, t in enumerate(types) if t != "sliding_attention"}
    if config.model_type == "cohere2_moe" and getattr(config, "prefix_dense_sliding_window_pattern", None) == 1:
        mlp = list(getattr(config, "mlp_layer_types", None) or ())
        found -= {i for i, kind in enumerate(mlp) if kind == "dense"}  # its attention's force_rope
    return found


def _cross_attention(config) -> set[int]:
    """Llama 3.2 Vision: its cross-attention layers (to the image) use no RoPE."""
    layers = getattr(config, "cross_attention_layers", None)
    return set(layers) if isinstance(layers, (list, tuple)) else set()


def _mem_rope(config) -> set[int]:
    """Zamba 2 rotates only with ``use_mem_rope``."""
    if config.model_type == "zamba2" and not getattr(config, "use_mem_rope", False):
        return set(range(int(getattr(config, "num_hidden_layers", 0) or 0)))
    return set()


SLIDING_ONLY = {"cohere2", "cohere2_moe", "beam", "afmoe", "flint"}
SLIDING_ONLY_IF_WINDOW = {"exaone4", "exaone_moe", "kolibri1"}
NOPE_RULES: tuple[Callable[[object], set[int]], ...] = (_no_rope_layers, _nope_layer_types, _not_attention,
                                                         _zero_theta, _mem_rope, _cross_attention)


def nope_layers(config) -> tuple[int, ...]:
    """Indices of the decoder layers that use no rotary position embedding (NoPE, or not attention at all)."""
    found: set[int] = set()
    for rule in NOPE_RULES:
        found |= rule(config)
    if getattr(config, "model_type", None) in SLIDING_ONLY | SLIDING_ONLY_IF_WINDOW:
        found |= _global_nope(config)
    return tuple(sorted(found))


@dataclass(frozen=True)
class RopeTable:
    """One rotary table the model computes: for one layer type (None: a flat config's only table).

    geometry: its d, base and original window. rope_parameters: its entry of ``config.rope_parameters``.
    native: that entry as a spec (the model's own scaling). layers: the decoder layers that rotate with it.
    sliding_window: the attention window of those layers, when they slide.
    """

    layer_type: str | None
    geometry: RopeGeometry
    rope_parameters: dict
    native: RopeSpec
    layers: tuple[int, ...]
    sliding_window: int | None = None

    @property
    def name(self) -> str:
        return self.layer_type or "all"


@dataclass(frozen=True)
class RotarySite:
    """One rotary module of the model: where it sits, what layout it writes, which layer types it serves
    (None: ``forward(x, position_ids)``; else ``forward(x, position_ids, layer_type)``)."""

    parent: nn.Module
    attr: str
    module: nn.Module
    layout: str
    layer_types: tuple[str, ...] | None


@dataclass
class ModelRope:
    """A model's RoPE as `model_rope` reads it."""

    model_type: str
    sites: list[RotarySite]
    tables: list[RopeTable]
    layer_count: int
    nope_layers: tuple[int, ...] = ()
    default_layer_type: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def per_layer_type(self) -> bool:
        return any(t.layer_type is not None for t in self.tables)

    @property
    def rope_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.layer_count) if i not in self.nope_layers)

    @property
    def layouts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.layout for s in self.sites))

    def table(self, layer_type: str | None) -> RopeTable:
        for t in self.tables:
            if t.layer_type == layer_type:
                return t
        names = ", ".join(t.name for t in self.tables)
        raise LongRopeError(f"{self.model_type} has no RoPE layer type {layer_type!r} (its RoPE tables: {names})")

    def target(self, layer_type: str | None = None) -> RopeTable:
        """The table a spec scales: ``layer_type``'s, or the default (full attention layers / the only table)."""
        if layer_type is None:
            layer_type = self.default_layer_type
        elif not self.per_layer_type:
            raise LongRopeError(f"{self.model_type} has one RoPE table for every layer: layer types cannot be chosen")
        return self.table(layer_type)


def _text_config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None:
        return None
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _originals(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """The model's own rotary modules, also when `apply` has swapped ours in."""
    found = []
    for parent, attr, child in find_rotary_modules(model):
        if isinstance(child, ScaledRotaryEmbedding):
            child = child.original
        if child is not None:
            found.append((parent, attr, child))
    return found


def _takes_layer_type(module: nn.Module) -> bool:
    try:
        return "layer_type" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _call(module: nn.Module, x: torch.Tensor, positions: torch.Tensor, layer_type: str | None):
    return module(x, positions) if layer_type is None else module(x, positions, layer_type)


def _describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"one {out.dtype} tensor of shape {list(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"{len(out)} values ({', '.join(_describe(o) for o in out)})"
    return type(out).__name__


def detect_layout(out, dim: int, name: str) -> str:
    """The layout (`longrope.attention.rotary.LAYOUTS`) of a rotary module's output for rotary dimension ``dim``."""
    if isinstance(out, torch.Tensor) and out.is_complex() and out.shape[-1] == dim // 2:
        return COMPLEX
    if (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out)
            and out[0].shape == out[1].shape and out[0].shape[-1] == dim):
        cos = out[0].float()
        half = dim // 2
        if torch.equal(cos[..., :half], cos[..., half:]):
            return HALF
        if torch.equal(cos[..., 0::2], cos[..., 1::2]):
            return INTERLEAVED
    if (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out)
            and out[0].shape == out[1].shape and out[0].shape[-1] == dim // 2):
        first = out[0].float()[..., 0, :]  # position 0: cos = scale, sin = 0
        if bool((first == 0).all()):
            return SIN_COS_PAIRS
        return PAIRS
    raise LongRopeError(
        f"{name} returns {_describe(out)}, which is not a rotary table of dimension {dim} in a layout longrope "
        "writes (cos/sin half-split, interleaved or one per pair, or complex freqs_cis): this architecture is not "
        "supported")


def _difference(ours, theirs) -> float:
    if isinstance(theirs, torch.Tensor):
        return float((ours - theirs).abs().max())
    return max(float((a.float() - b.float()).abs().max()) for a, b in zip(ours, theirs))


def _probe_positions(window: int) -> torch.Tensor:
    """A few positions inside the window (outside it, length-dependent modules would switch tables)."""
    values = sorted({p for p in (0, 1, 2, 3, 5, 8, 13, 21, window // 2, window - 1) if 0 <= p < window})
    return torch.tensor([values])


def _table(config, layer_type: str | None, layers: Sequence[int], name: str) -> RopeTable:
    params = layer_rope_parameters(config, layer_type)
    geometry = RopeGeometry.from_config(config, layer_type)
    where = f" ({layer_type} layers)" if layer_type else ""
    try:
        native = from_rope_parameters(params, getattr(config, "max_position_embeddings", None))
    except LongRopeError as exc:
        raise LongRopeError(f"{name}{where}: {exc}; longrope reproduces RoPE of the types default, linear, "
                            "dynamic, yarn, llama3 and longrope") from None
    sliding = None
    if layer_type is not None and "sliding" in layer_type:
        sliding = getattr(config, "sliding_window", None)
    return RopeTable(layer_type, geometry, params, native, tuple(layers), sliding)


class _Rounded(ScaledRotaryEmbedding):
    """Our tables with the inverse frequencies rounded to ``dtype``: what a rotary module computes after
    ``model.to(torch.bfloat16)`` cast its ``inv_freq`` buffer (used only to check the module, never installed)."""

    def __init__(self, specs, geometry, layout, dtype: torch.dtype):
        super().__init__(specs, geometry, layout)
        self.dtype = dtype

    def tables(self, seq_len, device):
        inv, attention = super().tables(seq_len, device)
        return inv.to(self.dtype).float(), attention


def _frequency_dtype(module: nn.Module) -> torch.dtype | None:
    """The reduced precision of a module's ``inv_freq`` buffers (None: float32 or better)."""
    dtypes = [b.dtype for n, b in module.named_buffers() if "inv_freq" in n and b.is_floating_point()]
    reduced = [d for d in dtypes if torch.finfo(d).eps > torch.finfo(torch.float32).eps]
    return max(reduced, key=lambda d: torch.finfo(d).eps) if reduced else None


def _check_site(module: nn.Module, tables: Sequence[RopeTable], name: str) -> str:
    """Call ``module`` for each of its tables and compare with ours; the layout it writes, or a refusal."""
    layout = None
    for table in tables:
        positions = _probe_positions(table.geometry.original_window)
        x = torch.zeros(1, positions.shape[1], 1, dtype=torch.float32,
                        device=next(iter(module.buffers()), torch.empty(0)).device)
        positions = positions.to(x.device)
        try:
            with torch.no_grad():
                out = _call(module, x, positions, table.layer_type)
        except Exception as exc:  # a rotary module with another calling convention
            raise LongRopeError(f"{name}'s rotary module {type(module).__name__} cannot be called as "
                                f"(x, position_ids{', layer_type' if table.layer_type else ''}): "
                                f"{type(exc).__name__}: {exc}; this architecture is not supported") from None
        found = detect_layout(out, table.geometry.dim, f"{name}'s {type(module).__name__}")
        if layout is not None and found != layout:
            raise LongRopeError(f"{name}'s {type(module).__name__} writes {layout} and {found} tables for different "
                                "layer types: not supported")
        layout = found
        rounded = _frequency_dtype(module)
        ours = (ScaledRotaryEmbedding([table.native], table.geometry, layout) if rounded is None else
                _Rounded([table.native], table.geometry, layout, rounded))(x, positions)
        difference = _difference(ours, out)
        if not difference <= PROBE_TOLERANCE:
            where = f" for its {table.layer_type} layers" if table.layer_type else ""
            raise LongRopeError(
                f"{name}'s {type(module).__name__} computes other rotary tables{where} than RoPE with "
                f"{table.geometry} and its rope_parameters {table.rope_parameters} (max difference "
                f"{difference:.3g} inside the window): longrope cannot reproduce this architecture exactly")
    return layout or HALF


def _site_config(module: nn.Module, config):
    """The config a rotary module was built from: its own when it keeps one (Granite SWA builds one per base)."""
    own = getattr(module, "config", None)
    return own if own is not None and hasattr(own, "rope_parameters") else config


def model_rope(model: nn.Module) -> ModelRope:
    """Read ``model``'s RoPE (see the module docstring); `LongRopeError` with the reason when it cannot be scaled."""
    name = type(model).__name__
    config = _text_config(model)
    originals = _originals(model) if config is not None else []
    model_type = getattr(config, "model_type", None) or name
    refusal = REFUSALS.get(model_type)
    reason = refusal(config) if refusal is not None and config is not None else None
    if reason:
        raise LongRopeError(reason)
    if not originals:
        kind = getattr(config, "position_embedding_type", None) if config is not None else None
        said = f" (its config: position_embedding_type={kind!r})" if hasattr(config, "position_embedding_type") else ""
        raise LongRopeError(
            f"{name} has no rotary position embedding{said} (e.g. GPT-2 learns absolute positions); longrope works "
            "on RoPE models such as Llama, Mistral, Qwen2, Phi-3"
        )
    try:
        return _read(model, name, config, model_type, originals)
    except LongRopeError:
        raise
    except Exception as exc:  # a config or module shape this reader does not know: refuse, naming it
        raise LongRopeError(f"{name}: longrope cannot read its RoPE ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); this architecture is not supported") \
            from None


def _read(model, name, config, model_type, originals) -> ModelRope:
    layer_count = int(getattr(config, "num_hidden_layers", 0) or 0)
    layer_types = list(getattr(config, "layer_types", None) or ())
    nope = nope_layers(config)
    if layer_count and len(nope) >= layer_count:
        raise LongRopeError(f"{name}: none of its {layer_count} layers uses RoPE (all are NoPE): nothing to scale")
    nested = rope_layer_types(config)
    unknown = [t for t in nested if t not in layer_types]
    if nested and len(unknown) == len(nested):  # DeepSeek-V4's main / compress: no table names a layer type
        raise LongRopeError(
            f"{name} keeps RoPE tables under labels that are not its layer types ({', '.join(unknown)}; layer types: "
            f"{', '.join(dict.fromkeys(map(str, layer_types))) or 'none'}): which layers rotate with which table is "
            "not in its config; not supported")
    tables: list[RopeTable] = []
    if nested:
        for t in nested:
            if layer_rope_parameters(config, t) is None:
                continue
            layers = [i for i, lt in enumerate(layer_types) if lt == t and i not in nope]
            tables.append(_table(config, t, layers, name))
    else:
        tables.append(_table(config, None, [i for i in range(layer_count) if i not in nope], name))
    sites = []
    for parent, attr, module in originals:
        if nested and _takes_layer_type(module):
            served = [t for t in tables if t.layer_type in nested]
            site_types: tuple[str, ...] | None = tuple(t.layer_type for t in served)
        elif nested:
            raise LongRopeError(f"{name} keeps rope_parameters per layer type but its {type(module).__name__} "
                                "takes no layer type: not supported")
        else:
            own = _site_config(module, config)
            served = tables if own is config else [_table(own, None, tables[0].layers, name)]
            if served[0].geometry != tables[0].geometry:
                raise LongRopeError(
                    f"{name}'s layers rotate with different RoPE ({served[0].geometry} and {tables[0].geometry}) "
                    "through separate rotary modules: a spec is made for one geometry; not supported")
            site_types = None
        layout = _check_site(module, served, name)
        sites.append(RotarySite(parent, attr, module, layout, site_types))
    return ModelRope(model_type, sites, tables, layer_count, nope, default_layer_type(config) if nested else None)
