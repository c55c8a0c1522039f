"""``longrope export`` and ``longrope convert``: thin layers over `export_hf`, `export_gguf`, `convert_gguf_to_hf`."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from longrope.errors import LongRopeError
from longrope.validation import check_number, check_output_dir

console = Console()

GGUF_NAME = "model.gguf"


def _gguf_source(model: str, gguf_from: Path | None) -> Path | None:
    """The GGUF to add factors to: --gguf-from, else MODEL itself when it is a GGUF (keeps its quantisation)."""
    if gguf_from is not None:
        return gguf_from
    if model == "smollm2":
        from longrope.models.loading import smollm2_gguf_path

        return smollm2_gguf_path()
    if model.endswith(".gguf"):
        return Path(model).expanduser()
    return None


def export_command(
    model: Annotated[str, typer.Argument(help="'tiny', 'smollm2', an HF directory, a .gguf file or a hub id")],
    spec: Annotated[Path, typer.Option("--spec", help="Spec JSON (from `longrope search` or written by hand)")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (HF model; plus model.gguf with --gguf)")],
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output directory")] = False,
    lossy: Annotated[bool, typer.Option(
        "--lossy", help="Drop what the target cannot express (n_hat, STRING, short factors on llama GGUFs) "
                        "and list it, instead of refusing")] = False,
    gguf: Annotated[bool, typer.Option("--gguf", help="Also write OUT/model.gguf for llama.cpp")] = False,
    gguf_from: Annotated[Path | None, typer.Option(
        "--gguf-from", help="GGUF to copy (any quantisation) with rope factors added; default: MODEL when it is a "
                            "GGUF, else converted from the weights")] = None,
    gguf_dtype: Annotated[str, typer.Option("--gguf-dtype", help="f32 or f16 for a GGUF converted from weights")]
    = "f32",
    window: Annotated[int | None, typer.Option(
        "--window", help="max_position_embeddings / context_length to declare (default: original window x factor)")]
    = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Weight dtype to load and save: fp32, bf16 or fp16")]
    = "fp32",
):
    """Export MODEL scaled by SPEC for stock tools: an HF directory (transformers, vLLM) and optionally a GGUF.

    The HF config carries rope_parameters of the spec's native transformers type; the GGUF carries llama.cpp rope
    factors. The weights are not changed. A failed export leaves no directory behind.
    """
    from longrope.export.gguf_export import (
        _open_reader,
        export_gguf,
        gguf_geometry,
        plan_gguf_rope,
        read_metadata,
    )
    from longrope.export.hf import export_hf, plan_hf_rope
    from longrope.models.loading import load_model
    from longrope.patch import model_geometry
    from longrope.rope import load_spec

    # Every check that needs no model comes first: a mistake costs no loading and writes nothing.
    check_number("--window", window, minimum=1)
    out = check_output_dir("--out", out)
    scaling = load_spec(spec)
    if gguf_from is not None and not gguf:
        raise LongRopeError("--gguf-from needs --gguf")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise LongRopeError(f"{out} is not empty; pass --force to replace it")
    loaded, tokenizer = load_model(model, dtype)
    geometry = model_geometry(loaded)
    plan = plan_hf_rope(loaded.config, scaling, geometry, window, lossy)
    source = _gguf_source(model, gguf_from) if gguf else None
    gguf_plan = None
    if gguf:  # validate the GGUF side before writing anything
        if source is not None:
            arch, gguf_geo = gguf_geometry(read_metadata(_open_reader(source)))
            gguf_plan = plan_gguf_rope(arch, scaling, gguf_geo, window, lossy)
        else:
            from longrope.export.gguf_export import GGUF_ARCH_OF_MODEL_TYPE

            arch = GGUF_ARCH_OF_MODEL_TYPE.get(loaded.config.model_type)
            if arch is None:
                raise LongRopeError(
                    f"writing a GGUF from a '{loaded.config.model_type}' model is not supported (llama, mistral, "
                    "phi3 are); give --gguf-from FILE.gguf or convert the exported directory with llama.cpp")
            gguf_plan = plan_gguf_rope(arch, scaling, geometry, window, lossy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_hf(loaded, tokenizer, scaling, out, target_window=window, force=force, lossy=lossy)
    console.print(f"[green]wrote[/] {path} (rope_type {plan.rope_parameters['rope_type']}, "
                  f"max_position_embeddings {plan.max_position_embeddings})")
    if gguf:
        try:
            gguf_path = export_gguf(scaling, path / GGUF_NAME, model=loaded, tokenizer=tokenizer, source_gguf=source,
                                    dtype=gguf_dtype, target_window=window, force=True, lossy=lossy)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        console.print(f"[green]wrote[/] {gguf_path} ({'copy of ' + str(source) if source else gguf_dtype})")
    for note in plan.notes + (gguf_plan.notes if gguf_plan else []):
        console.print(f"note: {note}")
    lost = list(dict.fromkeys(plan.lost + (gguf_plan.lost if gguf_plan else [])))
    for item in lost:
        console.print(f"[yellow]lost:[/] {item}")


def convert_command(
    model: Annotated[str, typer.Argument(help="A .gguf file, or 'smollm2'")],
    out_dir: Annotated[Path, typer.Argument(help="Output directory")],
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output directory")] = False,
):
    """Convert a GGUF into an ordinary Hugging Face directory (de-quantised float32 weights, tokenizer, config).

    llama.cpp rope factors in the GGUF become the equivalent rope_parameters.
    """
    from longrope.export.convert import convert_gguf_to_hf

    out_dir = check_output_dir("OUT_DIR", out_dir)
    if model == "smollm2":
        from longrope.models.loading import smollm2_gguf_path

        source = smollm2_gguf_path()
    else:
        source = Path(model).expanduser()
        if not source.is_file():
            raise LongRopeError(f"GGUF file {source} does not exist")
    path = convert_gguf_to_hf(source, out_dir, force=force)
    console.print(f"[green]wrote[/] {path}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("convert")(convert_command)
