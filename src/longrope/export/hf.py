"""Export a scaled model as an ordinary Hugging Face directory that stock transformers (and vLLM) run as is.

The weights do not change: only ``config.json`` does. It gets the ``rope_parameters`` of the spec's native
transformers type (``longrope``, ``linear``, ``yarn``, ``dynamic``, ``llama3``; NTK-aware becomes ``default``
with the enlarged base as ``rope_theta``) and the new ``max_position_embeddings``. Beside it:
``longrope_spec.json`` (our full spec, readable by `longrope.rope.load_spec`) and ``longrope_export.json``
(what the config expresses, and what it could not).

Architecture quirks handled here (transformers 5):

- LongRoPE switches to the long factors when ``max(position_ids) + 1 > original_max_position_embeddings``
  (read from ``rope_parameters``), so that key must be the original window L, never the extended one.
- Phi-3 reads ``original_max_position_embeddings`` from the top level of its config and gives it priority over
  ``rope_parameters``; we set both. Phi-3 accepts only ``default`` or ``longrope``: the static methods (PI,
  YaRN, Llama-3) are written as ``longrope`` with equal short and long factors and an explicit attention
  factor, which computes the same frequencies.
- Dynamic NTK uses ``max_position_embeddings`` itself as the original window, so for it that field stays L.
- Per-layer-type configs (Gemma 3, Olmo 3, ...) keep one ``rope_parameters`` entry per layer type: only the
  scaled type's entry is rewritten (default: the full attention layers), the others are kept as they are.
- Keys of the original entry that belong to no scaling (``partial_rotary_factor``, Ministral 3's
  ``llama_4_scaling_beta``, multimodal ``mrope_section``, ...) are kept: other parts of the model read them.
- Phi-3.5-MoE's own rotary module reads ``short_mscale`` / ``long_mscale`` for every longrope config (and fails
  without them): both are written, equal to the attention factor.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from longrope.atomic import atomic_dir
from longrope.errors import LongRopeError
from longrope.rope import (
    SPEC_FILE,
    DynamicNTKSpec,
    LongRopeSpec,
    NoScaling,
    NTKSpec,
    RopeGeometry,
    RopeSpec,
    StringSpec,
    inv_freq_for,
    ntk_base,
    rescale_factors,
    save_spec,
    to_rope_parameters,
)
from longrope.rope.geometry import default_layer_type, layer_rope_parameters, rope_layer_types
from longrope.rope.spec import LinearSpec, Llama3Spec, YarnSpec

REPORT_FILE = "longrope_export.json"
GGUF_NAME = "model.gguf"  # the GGUF written beside the HF files by `longrope export --gguf`

# model_type -> the rope_type values its config accepts (None: every type transformers knows).
ACCEPTED_ROPE_TYPES: dict[str, tuple[str, ...]] = {"phi3": ("default", "longrope"), "phimoe": ("default", "longrope")}
# model types whose rotary module reads short_mscale / long_mscale of every longrope config.
MSCALE_KEYS_REQUIRED = ("phimoe",)
# rope_parameters keys that belong to a scaling; the others of an entry are kept on export (among them
# original_max_position_embeddings, which Ministral 3's query scaling reads whatever the rope_type).
SCALING_KEYS = ("rope_type", "type", "rope_theta", "factor", "attention_factor", "beta_fast", "beta_slow", "mscale",
                "mscale_all_dim", "truncate", "short_factor", "long_factor", "low_freq_factor", "high_freq_factor",
                "short_mscale", "long_mscale")


class LossyExportWarning(UserWarning):
    """An export with ``lossy=True`` dropped part of the spec; the message says which part."""


@dataclass
class HfRopePlan:
    """What an HF export writes: config fields, and what of the spec they cannot carry.

    rope_parameters: the new rope_parameters of the scaled layers (rope_theta included).
    max_position_embeddings: the new ``config.max_position_embeddings``.
    layer_type: the layer type scaled on a per-layer-type config (None: a flat config).
    config_rope_parameters: the whole new ``config.rope_parameters`` (per layer type, or ``rope_parameters``).
    top_level: other config attributes to set (Phi-3's ``original_max_position_embeddings``).
    exported: the spec the config expresses exactly (the input minus what was lost).
    lost: what the config cannot express (empty unless ``lossy``).
    notes: exact rewrites worth knowing (e.g. PI written as longrope for Phi-3).
    """

    rope_parameters: dict[str, Any]
    max_position_embeddings: int
    top_level: dict[str, Any] = field(default_factory=dict)
    exported: RopeSpec | None = None
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    layer_type: str | None = None
    config_rope_parameters: dict[str, Any] | None = None


def reduce_spec(spec: RopeSpec, geometry: RopeGeometry) -> tuple[RopeSpec, list[str], float]:
    """``(spec without what stock runtimes cannot express, what was dropped, leftover attention factor)``.

    Drops LongRoPE's ``n_hat`` and STRING's shifted attention, keeping the scaling STRING sits on. STRING's own
    attention factor is folded into YaRN's / LongRoPE's; for other methods it is returned as the leftover
    (1.0 when there is none) for the caller to carry (GGUF can, transformers cannot).
    """
    lost: list[str] = []
    leftover = 1.0
    if isinstance(spec, StringSpec):
        shift, local = spec.resolved(geometry.original_window)
        lost.append(
            f"STRING's position shift (S={shift}, W={local}): distances >= {shift} will be seen as they are, "
            f"not as distance - {shift - local}; only its base scaling '{spec.base.method}' is exported"
        )
        base = spec.base.with_window(spec.original_window) if spec.original_window else spec.base
        if spec.attention_factor is not None and spec.attention_factor != 1.0:
            if isinstance(base, (YarnSpec, LongRopeSpec)):
                own = inv_freq_for(base.with_window(geometry.original_window), geometry, None)[1]
                base = dataclasses.replace(base, attention_factor=own * spec.attention_factor)
            else:
                leftover = float(spec.attention_factor)
        spec = base
    if isinstance(spec, LongRopeSpec) and spec.n_hat:
        lost.append(
            f"LongRoPE n_hat={spec.n_hat}: positions 0..{spec.n_hat - 1} will use the scaled frequencies "
            "instead of the original ones"
        )
        spec = dataclasses.replace(spec, n_hat=0)
    return spec, lost, leftover


def _as_longrope(spec: RopeSpec, geometry: RopeGeometry) -> dict[str, Any]:
    """A static method as longrope parameters with equal short and long factors (same frequencies)."""
    factors, attention = rescale_factors(spec.with_window(geometry.original_window), geometry)
    values = [float(v) for v in factors.tolist()]
    return {
        "rope_type": "longrope",
        "long_factor": values,
        "short_factor": list(values),
        "factor": float(getattr(spec, "factor", 1.0)),
        "attention_factor": float(attention),
        "original_max_position_embeddings": int(spec.original_window or geometry.original_window),
    }


def portable_spec(spec: RopeSpec) -> RopeSpec:
    """The one-table form of ``spec`` for deployment: LongRoPE's long factors also serve as its short ones, so
    transformers (which re-decides per forward call), vLLM (once per deployment) and llama.cpp (from n_ctx)
    compute the same thing at every length. Other static methods already have one table; dynamic NTK depends
    on the length by design and is refused."""
    if isinstance(spec, DynamicNTKSpec) or (isinstance(spec, StringSpec) and isinstance(spec.base, DynamicNTKSpec)):
        raise LongRopeError("dynamic NTK changes with the sequence length by design; it has no portable form "
                            "(export a static method such as yarn or a searched longrope spec)")
    if isinstance(spec, LongRopeSpec):
        return dataclasses.replace(spec, short_factor=tuple(spec.long_factor))
    return spec


def _portable_scale(params: dict[str, Any], spec: RopeSpec, geometry: RopeGeometry, max_positions: int,
                    notes: list[str]) -> None:
    """vLLM multiplies cos/sin by sqrt(1 + ln(max_pos/orig)/ln(orig)) and ignores attention_factor: when our
    attention factor differs from that, write it as short_mscale/long_mscale too (keys vLLM reads)."""
    original = int(params["original_max_position_embeddings"])
    ratio = max_positions / original
    vllm_default = math.sqrt(1 + math.log(ratio) / math.log(original)) if ratio > 1 else 1.0
    ours = float(inv_freq_for(spec.with_window(original), geometry, max_positions)[1])
    if abs(ours - vllm_default) > 1e-6:
        params["short_mscale"] = params["long_mscale"] = ours
        notes.append(f"attention factor {ours:.6g} also written as short_mscale/long_mscale for vLLM (its default "
                     f"would be {vllm_default:.6g}); transformers logs them as unrecognised keys and ignores them")


def plan_hf_rope(config, spec: RopeSpec, geometry: RopeGeometry | None = None, target_window: int | None = None,
                 lossy: bool = False, portable: bool = False, layer_type: str | None = None) -> HfRopePlan:
    """The config changes that make stock transformers compute what ``spec`` computes on this model.

    ``portable`` exports `portable_spec(spec)` with the attention factor in every runtime's keys. ``layer_type``:
    the layers scaled on a per-layer-type config (default: the full attention ones). Raises `LongRopeError` when
    the spec does not fit the model (e.g. wrong number of factors), or when part of it cannot be expressed and
    ``lossy`` is False.
    """
    config = getattr(config, "get_text_config", lambda: config)()
    nested = rope_layer_types(config)
    if nested:
        layer_type = layer_type or default_layer_type(config)
    elif layer_type is not None:
        raise LongRopeError(f"{type(config).__name__} has one RoPE table for every layer: layer types cannot be chosen")
    if portable:
        spec = portable_spec(spec)
    if not isinstance(spec, RopeSpec):
        raise LongRopeError(f"export needs one RopeSpec, got {spec!r}")
    geometry = geometry or RopeGeometry.from_config(config, layer_type)
    window = spec.original_window or geometry.original_window
    # Validate against the model: factor count, STRING's S/W.
    inv_freq_for(spec.with_window(geometry.original_window), geometry, None)
    if isinstance(spec, StringSpec):
        spec.resolved(geometry.original_window)
    exported, lost, leftover = reduce_spec(spec, geometry)
    if leftover != 1.0:
        lost.append(f"STRING's attention factor {leftover:g}: '{exported.method}' has no attention factor in "
                    "transformers")
    if lost and not lossy:
        raise LongRopeError(
            f"transformers' rope_parameters cannot express {'; '.join(lost)}. Pass lossy=True (--lossy) to "
            "export without it"
        )
    model_type = getattr(config, "model_type", "")
    notes: list[str] = []
    if isinstance(exported, NTKSpec):
        base = ntk_base(exported.factor, geometry)
        params: dict[str, Any] = {"rope_type": "default", "rope_theta": base}
        notes.append(f"ntk written as rope_type 'default' with rope_theta {base:.6g} (exact; it reads back as plain "
                     "RoPE with a larger base)")
    else:
        params = to_rope_parameters(exported, geometry.base, window)
    accepted = ACCEPTED_ROPE_TYPES.get(model_type)
    if accepted is not None and params["rope_type"] not in accepted:
        if isinstance(exported, (LinearSpec, YarnSpec, Llama3Spec)):
            params = {"rope_theta": geometry.base, **_as_longrope(exported, geometry)}
            notes.append(f"{model_type} accepts only rope_type {' / '.join(accepted)}: {exported.method} written as "
                         "longrope with equal short and long factors and an explicit attention factor "
                         "(same frequencies up to float32 rounding)")
        else:
            raise LongRopeError(
                f"{model_type} models accept only rope_type {' / '.join(accepted)} in transformers, and "
                f"{exported.method} depends on the sequence length, so it cannot be written as fixed factors"
            )
    # Keep what the original rope_parameters carry besides the scaling (partial rotary factor, ...).
    original = layer_rope_parameters(config, layer_type) or {}
    for key, value in original.items():
        if key not in SCALING_KEYS:
            params.setdefault(key, value)
    if model_type in MSCALE_KEYS_REQUIRED and params.get("rope_type") == "longrope":
        attention = float(inv_freq_for(exported.with_window(geometry.original_window), geometry, None)[1])
        params.setdefault("short_mscale", attention)
        params.setdefault("long_mscale", attention)
        notes.append(f"{model_type}'s rotary module reads short_mscale/long_mscale: both written ({attention:.6g}); "
                     "it uses short_factor at every length, so export with --portable for lengths past the window")

    factor = float(getattr(exported, "factor", 1.0) or 1.0)
    if isinstance(exported, DynamicNTKSpec):
        # transformers' dynamic NTK takes max_position_embeddings as the original window.
        max_positions = int(window)
        if target_window and target_window != window:
            notes.append(f"dynamic NTK: max_position_embeddings stays {window} (transformers uses it as the "
                         f"original window); --window {target_window} is not written")
    elif target_window:
        max_positions = int(target_window)
    elif isinstance(exported, NoScaling):
        max_positions = int(getattr(config, "max_position_embeddings", window) or window)
    else:
        max_positions = round(window * factor)
    if portable and params.get("rope_type") == "longrope":
        _portable_scale(params, exported, geometry, max_positions, notes)
    top_level: dict[str, Any] = {}
    if model_type == "phi3" or hasattr(config, "original_max_position_embeddings"):
        # Phi-3 reads this top-level field in preference to rope_parameters'.
        top_level["original_max_position_embeddings"] = int(window)
    whole: dict[str, Any] = params
    if nested:
        whole = copy.deepcopy(dict(config.rope_parameters))
        whole[layer_type] = params
        kept = [t for t in nested if t != layer_type and whole.get(t) is not None]
        if kept:
            notes.append(f"rope_parameters per layer type: {layer_type} scaled, {', '.join(kept)} kept as they are")
    return HfRopePlan(params, max_positions, top_level, exported.with_window(window), lost, notes, layer_type, whole)


def _check_target(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise LongRopeError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise LongRopeError(f"{out_dir} is not empty; pass force=True (--force) to replace it")


def clean_config(config):
    """A deep copy of ``config`` fit to save: without the quantization (GGUF) marker of a GGUF-loaded model."""
    config = copy.deepcopy(config)
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    return config


def save_weights(model, config, out_dir: Path) -> None:
    """``save_pretrained`` of ``model``'s weights under ``config``, without touching ``model``.

    A skeleton is built on the meta device from ``config`` and given the model's tensors (no copy), so this works
    for patched models (their rotary modules hold no weights) and for GGUF-loaded ones, which transformers
    refuses to save directly.
    """
    from transformers import AutoModelForCausalLM

    state = model.state_dict()
    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = skeleton.load_state_dict(state, strict=False, assign=True)
    tied = set(getattr(skeleton, "_tied_weights_keys", None) or ())
    missing = [k for k in missing if k not in tied and not any(k.endswith(t) for t in tied)]
    if missing or unexpected:
        raise LongRopeError(
            f"cannot export {type(model).__name__}: weights do not match a fresh {type(skeleton).__name__} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if getattr(config, "tie_word_embeddings", False):
        skeleton.tie_weights()
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        skeleton.generation_config = copy.deepcopy(generation)
    skeleton.save_pretrained(out_dir, safe_serialization=True)


def export_hf(model, tokenizer, spec: RopeSpec | None, out_dir: str | Path, target_window: int | None = None,
              force: bool = False, lossy: bool = False, also: Callable[[Path], None] | None = None,
              portable: bool = False, plan: HfRopePlan | None = None) -> Path:
    """Write ``model`` with ``spec`` as a Hugging Face directory any transformers 5 / vLLM loads with no code of ours.

    ``spec`` defaults to the one `longrope.attention.apply` put on the model. ``target_window`` sets
    ``max_position_embeddings`` (default: original window x factor). With ``lossy=True`` the parts stock
    runtimes cannot express (LongRoPE n_hat, STRING) are dropped, each with a `LossyExportWarning`, and listed in
    ``longrope_export.json``; without it they are a `LongRopeError`. The directory appears complete or not at
    all; a non-empty ``out_dir`` needs ``force=True``. ``also(directory)`` may add files (the CLI writes
    ``model.gguf``) before the directory is published, so a failure there leaves the previous export untouched.
    ``portable`` writes `portable_spec(spec)` (one factor table, attention factor in each runtime's keys), the
    export to serve with vLLM or llama.cpp or when generations cross the original window. ``plan``: the result
    of `plan_hf_rope` for these arguments when the caller already made it. Returns ``out_dir``.
    `longrope.export.export_model` adds the GGUF and plans both first.
    """
    from longrope.attention.patch import current_spec, scaled_layer_type
    from longrope.attention.rotary import model_geometry

    out_dir = Path(out_dir).expanduser()
    if spec is None:
        spec = current_spec(model)
        if spec is None:
            raise LongRopeError("no spec given and the model is not patched; pass a spec (--spec SPEC.json)")
    if isinstance(spec, (tuple, list)):
        raise LongRopeError("the model carries one spec per batch row; export needs exactly one spec")
    if target_window is not None and target_window < 1:
        raise LongRopeError(f"target window must be a positive number of tokens, got {target_window}")
    layer_type = scaled_layer_type(model)
    geometry = model_geometry(model, layer_type)
    if portable:
        spec = portable_spec(spec)
    _check_target(out_dir, force)
    base_config = model.config
    if plan is None:
        plan = plan_hf_rope(base_config, spec, geometry, target_window, lossy, portable, layer_type)
    for item in plan.lost:
        warnings.warn(f"lossy export: dropped {item}", LossyExportWarning, stacklevel=2)

    config = clean_config(base_config)
    text = config.get_text_config()  # the config itself, or a multimodal model's text part
    text.rope_parameters = plan.config_rope_parameters if plan.config_rope_parameters is not None \
        else plan.rope_parameters
    text.max_position_embeddings = plan.max_position_embeddings
    for key, value in plan.top_level.items():
        setattr(text, key, value)
    try:
        text.validate_rope()
    except ValueError as exc:
        raise LongRopeError(f"transformers rejects the exported rope_parameters: {exc}") from None

    def write(tmp: Path) -> None:
        save_weights(model, config, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_spec(spec.with_window(geometry.original_window), tmp / SPEC_FILE)
        report = {
            "spec": spec.with_window(geometry.original_window).to_dict(),
            "exported": plan.exported.to_dict() if plan.exported else None,
            "rope_parameters": plan.rope_parameters,
            "layer_type": plan.layer_type,
            "max_position_embeddings": plan.max_position_embeddings,
            "lost": plan.lost,
            "notes": plan.notes,
        }
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        if also is not None:
            also(tmp)

    return atomic_dir(out_dir, write)
