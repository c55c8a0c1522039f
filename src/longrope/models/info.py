"""`longrope info`: what a model's rotary embedding looks like and how it is scaled."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from longrope import hardware
from longrope.attention.blocked import blocked_attention_choice
from longrope.attention.model_rope import ModelRope, model_rope
from longrope.attention.patch import current_spec, scaled_layer_type
from longrope.hardware import model_record
from longrope.precision_options import DeviceOpt, DtypeOpt, check_precision
from longrope.rope.spec import from_rope_parameters


@dataclass
class ModelInfo:
    """What `longrope info` shows. rotary_dim, rope_base, original_window and critical_dim are those of the layers
    a spec scales (the full attention layers on per-layer-type models); ``layer_types`` describes each RoPE table
    (base, window, which layers) and ``rope_layers`` says which layers use RoPE at all (the rest are NoPE)."""

    architecture: str
    parameters: int
    head_dim: int
    rotary_dim: int
    rope_base: float
    original_window: int
    max_position_embeddings: int
    scaling: str
    critical_dim: int
    rotary_layout: str
    rope_layers: str
    layer_types: dict[str, str]

    def as_dict(self) -> dict:
        return asdict(self)


def _ranges(indices) -> str:
    """0,1,2,4 -> '0-2, 4'."""
    out, run = [], []
    for i in list(indices) + [None]:
        if run and (i is None or i != run[-1] + 1):
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
        if i is not None:
            run.append(i)
    return ", ".join(out) or "none"


def _rope_layers(rope: ModelRope) -> str:
    if not rope.nope_layers:
        return f"all {rope.layer_count}" if rope.layer_count else "all"
    return f"{_ranges(rope.rope_layers)} (NoPE, no position embedding: {_ranges(rope.nope_layers)})"


def _scaling_from_config(params: dict, max_positions: int) -> str:
    try:
        return from_rope_parameters(params, max_positions).describe()
    except Exception:  # an exotic rope_type: show it as transformers names it
        return str(params.get("rope_type", "default"))


def _layer_types(rope: ModelRope, scaled: str | None, patched: bool, max_positions: int) -> dict[str, str]:
    target = rope.target(scaled).layer_type
    out = {}
    for table in rope.tables:
        g = table.geometry
        window = f"sliding window {table.sliding_window}" if table.sliding_window else f"window {g.original_window}"
        role = ("scaled by the applied spec" if patched and table.layer_type == target else
                "a spec scales it by default" if not patched and table.layer_type == target else "keeps its RoPE")
        scaling = _scaling_from_config(table.rope_parameters, max_positions)
        out[table.name] = (f"base {g.base:g}, rotary dim {g.dim}, {window}, layers {_ranges(table.layers)}, "
                           f"config scaling {scaling}; {role}")
    return out


def model_info(model) -> ModelInfo:
    """Head dim, rope base, original window, current scaling and LongRoPE2's theoretical critical dimension, the
    rotary layout, which layers use RoPE and each layer type's RoPE."""
    rope = model_rope(model)
    spec = current_spec(model)
    target = rope.target(scaled_layer_type(model))
    geometry = target.geometry
    config = getattr(model.config, "get_text_config", lambda: model.config)()
    if spec is None:
        scaling = f"{_scaling_from_config(target.rope_parameters, config.max_position_embeddings)} (model config)"
    else:
        scaling = spec.describe() if hasattr(spec, "describe") else ", ".join(s.describe() for s in spec)
    if target.layer_type is not None:
        scaling = f"{scaling} on the {target.layer_type} layers"
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return ModelInfo(
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        head_dim=head_dim,
        rotary_dim=geometry.dim,
        rope_base=geometry.base,
        original_window=geometry.original_window,
        max_position_embeddings=config.max_position_embeddings,
        scaling=scaling,
        critical_dim=geometry.critical_dim,
        rotary_layout=", ".join(rope.layouts),
        rope_layers=_rope_layers(rope),
        layer_types=_layer_types(rope, scaled_layer_type(model), spec is not None, config.max_position_embeddings),
    )


def hardware_report(device: str = "auto", dtype: str = "auto") -> dict:
    """What `longrope info --hardware` prints: the device and dtype chosen and why, threads, the measured matmul
    speed of each dtype, and whether the blocked scoring attention is used."""
    precision = hardware.resolve_precision(device, dtype, warn=False)
    speeds = hardware.cpu_speeds()
    model, flags = hardware.cpu_description()
    report = {
        "device": str(precision.device), "dtype": hardware.dtype_name(precision.dtype), "why": precision.reason,
        "cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "cpu_gflops": {"fp32": round(speeds.fp32, 1), "bf16": round(speeds.bf16, 1)},
        "measured": "read from the cache" if speeds.cached else "just now",
        "torch": torch.__version__, "cuda": torch.version.cuda, "mps": hardware._mps_available(),
    }
    if torch.cuda.is_available():
        report["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    report["scoring_attention"] = blocked_attention_choice(precision.device, precision.dtype)
    return report


def info_command(
    model: str = typer.Argument("tiny", help="'tiny', 'smollm2', an HF directory, a .gguf file or a hub id"),
    hardware: bool = typer.Option(False, "--hardware", help="Instead: the device and dtype `auto` picks here and "
                                  "why (measured matmul speed per dtype), threads, and the scoring attention used."),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Show a model's RoPE: head dim, base, original window, current scaling, critical dimension (or, with
    --hardware, what this machine runs models on)."""
    check_precision(device, dtype)
    if hardware:
        _show("longrope info --hardware", hardware_report(device, dtype), as_json)
        return
    from longrope.models.loading import load_model

    loaded, _ = load_model(model, dtype=dtype, device=device)
    _show(f"longrope info: {model}", {**model_info(loaded).as_dict(), **model_record(loaded)}, as_json)


def _show(title: str, values: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(values, indent=2, default=str))
        return
    table = Table(title=escape(title), show_header=False)
    for key, value in values.items():
        if isinstance(value, dict) and key == "layer_types":
            for name, text in value.items():
                table.add_row(f"RoPE of {name}", escape(str(text)))
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = " ".join(map(str, value))
        table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) and not isinstance(value, bool)
                      else escape(str(value)))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)
