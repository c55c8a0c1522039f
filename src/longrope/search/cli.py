"""``longrope search``: a thin layer over `longrope.search.search` / `search_short`."""

from __future__ import annotations

import dataclasses
import math
import os
from contextlib import nullcontext
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from longrope.config_files import with_config_file
from longrope.errors import LongRopeError
from longrope.interrupts import on_interrupt, rerun_command
from longrope.locks import output_lock
from longrope.precision_options import DeviceOpt, DtypeOpt, check_precision
from longrope.validation import check_number, check_output_dir

console = Console()


def search_command(
    ctx: typer.Context,
    model: str = typer.Option(
        "tiny", "--model", help="'tiny', 'smollm2', an HF directory, a .gguf file or a hub id."
    ),
    factor: float | None = typer.Option(
        None, "--factor", "-s", help="Scale s = target length / original window."
    ),
    target_length: int | None = typer.Option(None, "--target-length", "--length",
                                             help="Target length L' (instead of --factor)."),
    generations: int = typer.Option(40, help="Generations after the initial population."),
    population: int = typer.Option(64, help="Initial population size."),
    parents: int = typer.Option(32, help="Parents kept per generation."),
    mutations: int = typer.Option(16, help="Mutated children per generation."),
    crossovers: int = typer.Option(16, help="Crossed children per generation."),
    max_evaluations: int | None = typer.Option(None, "--max-evaluations", help="Cap on evaluations."),
    max_forward_tokens: int | None = typer.Option(
        None, "--max-forward-tokens", help="Cap on the tokens of the candidates' forwards (a compute budget: e.g. "
        "give a two-objective search the forward_tokens a perplexity-only search spent, result.json)."
    ),
    docs: int = typer.Option(5, "--docs", "-k", help="Documents in the fitness."),
    corpus: str = typer.Option("stdlib", help="Corpus of the fitness documents: stdlib, a path, or hf:NAME."),
    split: str = typer.Option("validation", help="Split of the fitness documents (never test)."),
    short: bool = typer.Option(False, "--short", help="Search short factors (at the original window)."),
    long_spec: Path | None = typer.Option(
        None, "--long-spec", help="With --short: the long spec JSON (or preset) to complete."
    ),
    longrope2: bool = typer.Option(
        False, "--longrope2", help="LongRoPE2: search pairs >= the critical pair in [s, 2s]."
    ),
    critical_pair: int | None = typer.Option(
        None, "--critical-pair", help="LongRoPE2 critical pair (default: theory); with --search-critical, where the "
        "seeds start."
    ),
    search_critical: bool = typer.Option(
        False, "--search-critical", help="With --longrope2: search the critical pair too (LongRoPE2 as published), "
        "among the pairs from the one with ten periods inside the window up to the theoretical one."
    ),
    needle: bool = typer.Option(
        False, "--needle", help="Needle-driven fitness: loss on planted pass-key digits only."
    ),
    objective: str = typer.Option(
        "ppl", "--objective", help="ppl: one objective, the perplexity of the documents. ppl+needle: two objectives "
        "from the same forward of the same documents (no extra forward tokens per evaluation): the perplexity of "
        "their natural text and LongRoPE2's needle-driven perplexity (loss on the answer tokens of --needles-per-doc "
        "needles planted in each document at depths 0-100%, both ends included, several formats). Keeps the Pareto "
        "front (front.json, front.png with no scaling, PI, NTK, dynamic NTK and YaRN marked) and ships the lowest "
        "perplexity among front members whose needle loss is at most the best baseline's, else the member with the "
        "best needle loss."
    ),
    needles_per_doc: int = typer.Option(
        4, "--needles-per-doc", help="With --objective ppl+needle: needles planted in each fitness document."
    ),
    search_n_hat: bool = typer.Option(
        False, "--search-n-hat", "--n-hat", help="Also search n_hat (n_hat > 0 cannot be exported to transformers)."
    ),
    search_attention: bool = typer.Option(
        False, "--search-attention/--no-search-attention", "--attention/--no-attention",
        help="Also search the attention factor."
    ),
    attention_factor: float | None = typer.Option(
        None, "--attention-factor", help="The attention factor of every candidate (default: LongRoPE's "
        "sqrt(1 + ln s / ln L)). Larger values sharpen attention: on the built-in model at 8x, 1.25-1.5 "
        "retrieve more there and cost perplexity at every length (notes/experiments/issue29_tiny.md)."
    ),
    lambda_max: float | None = typer.Option(
        None, "--lambda-max", help="Upper bound of the factors (default 1.25*s)."
    ),
    factor_file: Path | None = typer.Option(
        None, "--factor-file", help="Extra seed: JSON list of factors, a spec or a preset."
    ),
    portable: bool = typer.Option(
        False, "--portable", help="Factors to serve at every length (long also as short, the form `longrope "
        "export --portable` writes): fitness + --portable-weight x max(0, in-window NLL - the model's own)."
    ),
    portable_weight: float = typer.Option(
        1.0, "--portable-weight", help="Weight of the in-window penalty of --portable."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the state file in --out."),
    out: Path = typer.Option(Path("search-out"), "--out", help="Output directory."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the search."),
    batch: int = typer.Option(4, "--batch", help="Candidates per forward pass."),
    racing: bool = typer.Option(True, "--racing/--no-racing", help="Drop hopeless candidates early."),
    racing_z: float = typer.Option(
        1.5,
        "--racing-z",
        help="Confidence of the racing rule: a child is dropped once its mean per-document gap to the "
        "reference parent, minus z prediction deviations, is still > 0; negative: the exact rule (never "
        "drops a child that could beat the reference).",
    ),
    racing_rank: int = typer.Option(
        0,
        "--racing-rank",
        help="Race children against this parent rank (1 = the best); 0: a quarter of the parents. The number "
        "of parents keeps the reference algorithm's selection; smaller: fewer tokens. Dropped children still "
        "compete for the parent set with their predicted fitness.",
    ),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    config_file: Path | None = typer.Option(
        None, "--config", help="TOML or JSON table of SearchConfig fields (a plan stage's keys); options given "
        "here win over it."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress display."),
) -> None:
    """Evolutionary search of LongRoPE rescale factors (LongRoPE / LongRoPE2); resumable; torchrun-aware.

    Writes best_spec.json, evaluations.jsonl, convergence.png, result.json and search_state.json to --out
    (with --objective ppl+needle also front.json and front.png).
    Run on several processes with: torchrun --nproc-per-node N -m longrope search ...
    """
    from longrope.rope import LongRopeSpec, load_spec
    from longrope.search.config import SearchConfig

    # Everything below is checked before torchrun's process group or the model: a mistake costs no compute.
    check_number("--racing-z", racing_z)  # negative is the exact rule; only NaN and infinities are mistakes
    out = check_output_dir("--out", out)
    check_precision(device, dtype)
    values = dict(
        factor=factor,
        target_length=target_length,
        population=population,
        mutations=mutations,
        crossovers=crossovers,
        parents=parents,
        generations=generations,
        max_evaluations=max_evaluations,
        max_forward_tokens=max_forward_tokens,
        lambda_max=lambda_max,
        search_n_hat=search_n_hat,
        search_attention=search_attention,
        attention_factor=attention_factor,
        longrope2=longrope2,
        critical_pair=critical_pair,
        search_critical=search_critical,
        docs=docs,
        corpus=corpus,
        split=split,
        needle=needle,
        objective=objective,
        needles_per_doc=needles_per_doc,
        seed=seed,
        batch=batch,
        racing=racing,
        racing_z=None if racing_z < 0 else racing_z,
        racing_rank=racing_rank or None,
        dtype=dtype,
        factor_file=str(factor_file) if factor_file else None,
        portable=portable,
        portable_weight=portable_weight,
    )
    config = SearchConfig(**with_config_file(ctx, config_file, values, SearchConfig))
    if config.factor is None and config.target_length is None and not short:
        raise LongRopeError("give --factor or --target-length")
    if config.portable and short:
        raise LongRopeError("--portable searches one table for every length; it has no short factors (drop --short)")
    spec = None
    if short:
        if long_spec is None:
            raise LongRopeError("--short needs --long-spec: the long spec whose short factors to search")
        spec = load_spec(long_spec)
        if not isinstance(spec, LongRopeSpec):
            raise LongRopeError(f"{long_spec} is a {spec.method} spec; --short needs a longrope spec")
        dataclasses.replace(config, factor=spec.factor, target_length=None).validate()  # as search_short sees it
    else:
        config.validate()

    # Rank 0 owns --out (the others never write it); taken before the model loads so a clash costs nothing.
    main_process = os.environ.get("RANK", "0") == "0"
    resume_hint = (f"search interrupted; every finished evaluation is in {out / 'evaluations.jsonl'} and the state in "
                   f"{out / 'search_state.json'}; continue with: {rerun_command('--resume')}")
    with output_lock(out) if main_process else nullcontext(), on_interrupt(resume_hint):
        _run_search(model, long_spec, spec, config, out, resume, progress, device)


def _run_search(model, long_spec, spec, config, out, resume, progress, device) -> None:
    from longrope.attention.rotary import model_geometry
    from longrope.models.loading import load_model
    from longrope.rope import check_preset_fits
    from longrope.search.distributed import init_from_env, local_device, shutdown
    from longrope.search.evolution import search, search_short

    comm = init_from_env()
    try:
        loaded, tokenizer = load_model(model, dtype=config.dtype, device=local_device(device))
        for named in (long_spec, config.factor_file):
            if named is not None:
                check_preset_fits(str(named), model_geometry(loaded))
        show = progress and comm.is_main
        if spec is not None:
            result = search_short(
                loaded, tokenizer, spec, config, out, resume=resume, progress=show, comm=comm
            )
        else:
            result = search(loaded, tokenizer, config, out, resume=resume, progress=show, comm=comm)
        if comm.is_main:
            seeds = ", ".join(f"{name} {math.exp(v):.3f}" for name, v in result.seeds.items())
            console.print(f"[bold]best perplexity[/] {result.perplexity:.3f}  (seeds: {escape(seeds)})")
            if result.front is not None:
                marks = ", ".join(f"{name} {math.exp(a):.3f} / {math.exp(b):.3f}"
                                  for name, (a, b) in (result.baselines or {}).items())
                console.print(f"[bold]shipped[/] ppl {result.perplexity:.3f}, needle ppl {result.needle_perplexity:.3f}"
                              f" of a front of {len(result.front)}: {escape(result.selection)}")
                console.print(f"baselines (ppl / needle ppl): {escape(marks)}")
                console.print(f"front: {result.front_path}  front plot: {result.front_plot_path}", markup=False,
                              soft_wrap=True)
            # Paths as text, on one line: brackets in them are not markup, and a copied path is whole.
            console.print(f"spec: {result.spec_path}  plot: {result.plot_path}  log: {result.log_path}",
                          markup=False, soft_wrap=True)
    finally:
        shutdown()


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
