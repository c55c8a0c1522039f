"""`longrope info`: what a model's rotary embedding looks like and how it is scaled."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import typer
from rich.console import Console
from rich.table import Table

from longrope.attention.patch import current_spec
from longrope.attention.rotary import model_geometry
from longrope.rope.spec import from_rope_parameters


@dataclass
class ModelInfo:
    architecture: str
    parameters: int
    head_dim: int
    rotary_dim: int
    rope_base: float
    original_window: int
    max_position_embeddings: int
    scaling: str
    critical_dim: int

    def as_dict(self) -> dict:
        return asdict(self)


def model_info(model) -> ModelInfo:
    """Head dim, rope base, original window, current scaling and LongRoPE2's theoretical critical dimension."""
    geometry = model_geometry(model)
    config = model.config
    spec = current_spec(model)
    if spec is None:
        params = dict(getattr(config, "rope_parameters", None) or {})
        try:
            scaling = from_rope_parameters(params, config.max_position_embeddings).describe()
        except Exception:  # an exotic rope_type: show it as transformers names it
            scaling = params.get("rope_type", "default")
        scaling = f"{scaling} (model config)"
    else:
        scaling = spec.describe() if hasattr(spec, "describe") else ", ".join(s.describe() for s in spec)
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
    )


def info_command(
    model: str = typer.Argument("tiny", help="'tiny', 'smollm2', an HF directory, a .gguf file or a hub id"),
):
    """Show a model's RoPE: head dim, base, original window, current scaling, critical dimension."""
    from longrope.models.loading import load_model

    loaded, _ = load_model(model)
    info = model_info(loaded)
    table = Table(title=f"longrope info: {model}", show_header=False)
    for key, value in info.as_dict().items():
        table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)
