"""``longrope export`` and ``longrope convert``: thin layers over `export_hf`, `export_gguf`, `convert_gguf_to_hf`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from longrope.errors import LongRopeError
from longrope.hardware import parse_dtype
from longrope.locks import output_lock
from longrope.precision_options import DeviceOpt, check_precision
from longrope.validation import check_number, check_output_dir

console = Console()



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
    spec: Annotated[Path, typer.Option(
        "--spec", help="Spec JSON (from `longrope search` or written by hand) or a preset name (`longrope presets`)")],
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
    portable: Annotated[bool, typer.Option(
        "--portable", help="One factor table (LongRoPE's long factors also as the short ones) and the attention "
                           "factor in every runtime's keys: the same result in transformers, vLLM and llama.cpp "
                           "at every length (check with `longrope verify`)")] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="Weight dtype to load and save: fp32, bf16 or fp16")]
    = "fp32",
):
    """Export MODEL scaled by SPEC for stock tools: an HF directory (transformers, vLLM) and optionally a GGUF.

    The HF config carries rope_parameters of the spec's native transformers type; the GGUF carries llama.cpp rope
    factors. The weights are not changed. A failed export leaves no directory behind.
    """
    from longrope.attention.rotary import model_geometry
    from longrope.export.bundle import export_model, plan_export
    from longrope.export.hf import GGUF_NAME
    from longrope.models.loading import load_model
    from longrope.rope import check_preset_fits, load_spec

    # Every check that needs no model comes first: a mistake costs no loading and writes nothing.
    check_number("--window", window, minimum=1)
    if gguf_dtype not in ("f32", "f16"):  # checked with or without --gguf: a typo is never silently ignored
        raise LongRopeError(f"--gguf-dtype must be f32 or f16, got {gguf_dtype!r}")
    if parse_dtype(dtype) is None:
        raise LongRopeError("--dtype auto means nothing for a saved file; give fp32, bf16 or fp16")
    out = check_output_dir("--out", out)
    scaling = load_spec(spec)
    if portable:
        from longrope.export.hf import portable_spec

        portable_spec(scaling)  # refuses dynamic NTK before the model loads
    if gguf_from is not None and not gguf:
        raise LongRopeError("--gguf-from needs --gguf")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise LongRopeError(f"{out} is not empty; pass --force to replace it")
    loaded, tokenizer = load_model(model, dtype, device="cpu")  # written as it is read: no compute to place
    check_preset_fits(str(spec), model_geometry(loaded))
    source = _gguf_source(model, gguf_from) if gguf else None
    plan = plan_export(loaded, scaling, target_window=window, lossy=lossy, portable=portable, gguf=gguf,
                       gguf_source=source)  # both sides checked before anything is written
    with output_lock(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what a lossy export dropped is listed below, once
        export_model(loaded, tokenizer, scaling, out, target_window=window, lossy=lossy, portable=portable,
                     gguf=gguf, gguf_source=source, gguf_dtype=gguf_dtype, force=force, plan=plan)
    # Paths and notes are text, not markup (a name may hold brackets); one line each, however long.
    console.print(f"[green]wrote[/] {escape(str(out))} (rope_type {plan.hf.rope_parameters['rope_type']}, "
                  f"max_position_embeddings {plan.hf.max_position_embeddings})", soft_wrap=True)
    if gguf:
        made = f"copy of {source}" if source else gguf_dtype
        console.print(f"[green]wrote[/] {escape(str(out / GGUF_NAME))} ({escape(made)})", soft_wrap=True)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    for item in plan.lost:
        console.print(f"[yellow]lost:[/] {escape(str(item))}", soft_wrap=True)


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
    console.print(f"[green]wrote[/] {escape(str(path))}", soft_wrap=True)


def verify_command(
    export_dir: Annotated[Path, typer.Argument(help="A directory written by `longrope export`")],
    new_tokens: Annotated[int, typer.Option("--new-tokens", help="Tokens of the crossing generation")] = 8,
    below: Annotated[int | None, typer.Option("--below", help="Prompt length below the window (default "
                                              "min(window/2, 512))")] = None,
    above: Annotated[int | None, typer.Option("--above", help="Prompt length above the window (default "
                                              "window + max(16, window/8))")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest logit difference called 'same'")]
    = 2e-3,
    out: Annotated[Path | None, typer.Option("--out", help="Also write verify.json and verify.md here")] = None,
    device: DeviceOpt = "auto",
):
    """Check that stock runtimes compute what we do for EXPORT_DIR (`longrope.export.verify_export`).

    Both transformers sides run on --device, always in fp32 (bf16's rounding alone exceeds the tolerance).

    transformers runs in a separate process that never imports longrope; llama.cpp through llama-cpp-python
    when installed and the export has model.gguf; vLLM by its documented rules applied to the config. Each is
    compared below the original window, above it, and in a greedy generation that crosses it. Exit status 1
    when a runtime differs (the table says what to do), 2 on bad input.
    """
    from longrope.eval.report import write_report
    from longrope.export.verify import verify_export

    check_number("--new-tokens", new_tokens, minimum=1)
    check_number("--tolerance", tolerance, minimum=0)
    for option, value in (("--below", below), ("--above", above)):
        check_number(option, value, minimum=2)
    if out is not None:
        out = check_output_dir("--out", out)
    check_precision(device, "fp32")
    lengths = {k: v for k, v in (("below window", below), ("above window", above)) if v is not None}
    report = verify_export(export_dir, new_tokens=new_tokens, lengths=lengths, tolerance=tolerance, device=device)
    console.print(f"{report.export_dir}: rope_type {report.rope_type}, original window {report.original_window}, "
                  "prompt lengths " + ", ".join(f"{k} {v}" for k, v in report.lengths.items()),
                  markup=False, soft_wrap=True)
    table = Table()
    for column in ("runtime", "check", "result", "max logit diff", "first differing token"):
        table.add_column(column)
    advice: dict[str, list[str]] = {}
    for row in report.rows:
        style = {"same": "green", "differs": "bold red"}.get(row.status, "dim")
        table.add_row(row.runtime, row.check, f"[{style}]{row.status}[/]",
                      "" if row.max_difference is None else f"{row.max_difference:.2e}",
                      "" if row.first_differing_token is None else str(row.first_differing_token))
        if row.advice and row.status == "differs":
            advice.setdefault(row.advice, []).append(f"{row.runtime} {row.check}")
    console.print(table)
    for text, where in advice.items():
        console.print(f"[bold]{escape('; '.join(where))}[/]: {escape(text)}", soft_wrap=True)
    if out is not None:
        paths = write_report(out, "verify", report.to_dict(), report.to_markdown() + "\n")
        console.print(f"report: {paths['json']}", markup=False, soft_wrap=True)
    if report.differs:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("convert")(convert_command)
    app.command("verify")(verify_command)
