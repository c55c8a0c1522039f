"""``longrope finetune``: a thin layer over `longrope.train.finetune` (``longrope extend`` is in
`longrope.recipes.cli`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from longrope.config_files import with_config_file
from longrope.errors import LongRopeError
from longrope.interrupts import on_interrupt, rerun_command
from longrope.locks import output_lock
from longrope.precision_options import DeviceOpt, check_precision
from longrope.validation import check_output_dir

console = Console()


def finetune_command(
    ctx: typer.Context,
    model: str = typer.Option("tiny", "--model", help="'tiny', 'smollm2', an HF directory, a .gguf file or a hub id."),
    spec: Path = typer.Option(..., "--spec",
                              help="Scaling spec JSON (e.g. best_spec.json of a search) or a preset name."),
    length: int | None = typer.Option(None, "--length", help="Tokens per training sequence (the extended length; "
                                      "with --pose the short window N). Required here or in --config."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps. Required here or in --config."),
    schedule: str = typer.Option("linear", "--schedule", help="linear (2e-5, linear decay) or constant (1e-6)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (overrides the schedule's preset)."),
    warmup_steps: int = typer.Option(0, "--warmup-steps", "--warmup", help="Linear warm-up steps."),
    batch_size: int = typer.Option(1, "--batch-size", "--batch", help="Sequences per micro-batch (per process)."),
    accum: int = typer.Option(1, "--accum", help="Micro-batches per optimizer step (gradient accumulation)."),
    mixed: bool = typer.Option(False, "--mixed", help="LongRoPE2 mixed context-window training: short documents "
                               "(at most the original window) packed with attention masked across them, at the "
                               "original RoPE, beside the long sequences at the scaled RoPE."),
    mixed_short_share: float = typer.Option(
        0.3, "--mixed-short-share", help="With --mixed: the share of the training tokens that are short (LongRoPE2: "
        "0.1 to 0.3)."),
    short_documents: str = typer.Option(
        "whole", "--short-documents", help="With --mixed: pack the short sequences from whole documents of at most "
        "the original window (whole, LongRoPE2's) or from every document cut into such pieces (cut)."),
    pose: bool = typer.Option(False, "--pose", help="PoSE: train on --length windows whose position ids skip "
                              "through --target-length (needs it)."),
    target_length: int | None = typer.Option(None, "--target-length", help="PoSE's target length L' (> --length)."),
    pose_chunks: int = typer.Option(2, "--pose-chunks", help="PoSE: chunks per window (>= 2)."),
    retrieval_fraction: float = typer.Option(
        0.0, "--retrieval-fraction", help="Share of the sequences replaced by retrieval windows (values defined "
        "and asked for; the built-in model's pre-training mixture), so retrieval survives the new length."),
    corpus: str = typer.Option("stdlib", "--corpus", help="Training documents (train split): stdlib, a path, hf:NAME."),
    save_every: int = typer.Option(0, "--save-every", help="Checkpoint every N steps (0: only the final model)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    out: Path = typer.Option(Path("finetune-out"), "--out", help="Output directory."),
    device: DeviceOpt = "auto",
    dtype: str = typer.Option("auto", "--dtype", help="Master weights dtype: auto (= fp32, what AdamW needs), fp32, "
                              "bf16 or fp16; the products' dtype is --mixed-precision."),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", "--precision",
                                        help="Mixed precision: auto (bf16 or fp16 where fast on the device, "
                                        "`longrope info --hardware`), bf16, fp16 or no."),
    gradient_checkpointing: bool = typer.Option(
        True, "--gradient-checkpointing/--no-gradient-checkpointing", "--checkpointing/--no-checkpointing",
        help="Gradient checkpointing (recompute activations in backward: memory for compute)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order and initial RNG state."),
    config_file: Path | None = typer.Option(
        None, "--config", help="TOML or JSON table of FinetuneConfig fields (a plan stage's keys); options given "
        "here win over it."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress display."),
) -> None:
    """Fine-tune a model at an extended length with a fixed RoPE scaling spec (LongRoPE, PI, YaRN, ...).

    Packs train-split documents that reach --length tokens into sequences of exactly --length tokens; chunked
    loss, gradient checkpointing, mixed precision where it is fast, AdamW. Writes --out/model (an HF directory
    whose config keeps
    the original RoPE, with longrope_spec.json beside it: load it with longrope.train.load_finetuned),
    --out/checkpoints and --out/train_log.jsonl. On several GPUs: accelerate launch -m longrope finetune ...
    """
    from longrope.attention.rotary import model_geometry
    from longrope.models.loading import load_model
    from longrope.rope import check_preset_fits, load_spec
    from longrope.rope.preset_files import is_preset_name
    from longrope.train.config import FinetuneConfig
    from longrope.train.finetuning import finetune

    values = dict(length=length, steps=steps, schedule=schedule, lr=lr, warmup_steps=warmup_steps,
                  batch_size=batch_size, accum=accum, mixed=mixed, mixed_short_share=mixed_short_share,
                  short_documents=short_documents, pose=pose, target_length=target_length,
                  pose_chunks=pose_chunks, corpus=corpus, save_every=save_every, mixed_precision=mixed_precision,
                  gradient_checkpointing=gradient_checkpointing, seed=seed, retrieval_fraction=retrieval_fraction)
    values = with_config_file(ctx, config_file, values, FinetuneConfig)
    missing = [f"--{name}" for name in ("length", "steps") if values[name] is None]
    if missing:
        raise LongRopeError(f"give {' and '.join(missing)} (on the command line or in --config)")
    config = FinetuneConfig(**values)
    scaling = load_spec(spec)
    # Master weights stay fp32 unless asked: AdamW's updates vanish in bf16 weights.
    precision = check_precision(device, "fp32" if dtype == "auto" else dtype)
    out = check_output_dir("--out", out)  # the config checked the numbers: all before the model loads
    hint = (f"fine-tuning interrupted; checkpoints (every --save-every steps) are in {out / 'checkpoints'}; "
            f"continue with: {rerun_command('--resume')}")
    with output_lock(out), on_interrupt(hint):
        loaded, tokenizer = load_model(model, dtype=precision.dtype, device=precision.device)
        if is_preset_name(str(spec)):
            check_preset_fits(str(spec), model_geometry(loaded))
        path = finetune(loaded, tokenizer, scaling, config, out, resume=resume, progress=progress)
    console.print(f"fine-tuned model: {path}", markup=False, soft_wrap=True)  # a path may hold brackets


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)
