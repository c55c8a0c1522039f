"""``longrope eval ...``: perplexity, passkey, needle grid and RULER-style tasks for several scalings at once.

Each command loads the model, builds one spec per ``--method``, calls the documented library function
(`evaluate_ppl`, `evaluate_passkey`, `evaluate_needle`, `evaluate_ruler`), writes JSON / markdown / PNG into
``--out`` and prints the markdown table.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from longrope.errors import LongRopeError
from longrope.precision_options import DeviceOpt, DtypeOpt, check_precision
from longrope.eval.report import EvaluationInterrupted
from longrope.rope import RopeSpec, check_preset_fits, load_spec, make_spec
from longrope.rope.preset_files import is_preset_name
from longrope.rope.spec import StringSpec, method_class
from longrope.validation import check_number, check_output_dir, check_text

eval_app = typer.Typer(
    help="Measure long-context ability: perplexity vs length, passkey retrieval, needle grids, RULER-style tasks.",
    no_args_is_help=True,
)
console = Console()

ModelOpt = Annotated[str, typer.Option("--model", help="'tiny', 'smollm2', an HF directory, a .gguf file or a hub id")]
MethodOpt = Annotated[list[str] | None, typer.Option(
    "--method", help="Scaling method (none, pi, ntk, dynamic_ntk, yarn, llama3, string), a spec JSON file or "
                     "a preset (`longrope presets`); string+METHOD puts STRING on top of any of them "
                     "(string+smollm2-16k); repeatable. Default: none, pi, dynamic_ntk, yarn.")]
FactorOpt = Annotated[float | None, typer.Option(
    "--factor", help="Scale factor for named methods (default: longest length / original window, rounded up)")]
LengthsOpt = Annotated[str | None, typer.Option(
    "--lengths", help="Comma list of token lengths, or multiples of the window like 1x,2x (default 1x,2x,4x,8x)")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Output directory (default ./longrope-eval/<command>)")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for documents, keys and depths")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars")]
TemplateOpt = Annotated[str, typer.Option(
    "--template", help="natural, code, dict, or auto (code for the tiny model, natural otherwise)")]
MaxNewTokensOpt = Annotated[int, typer.Option(
    "--max-new-tokens", help="Tokens generated for the answer (at least what the 5-digit key takes)")]
DEFAULT_METHODS = ["none", "pi", "dynamic_ntk", "yarn"]
T = TypeVar("T")


@dataclass
class EvalTarget:
    """The options every eval command shares: the model, the scalings and lengths, and where and how to report."""

    model: str
    method: list[str] | None
    factor: float | None
    lengths: str | None
    device: str
    dtype: str
    out: Path | None
    seed: int
    quiet: bool


def _shared_first(model: ModelOpt = "tiny", method: MethodOpt = None, factor: FactorOpt = None,
                  lengths: LengthsOpt = None) -> None:
    """The shared options listed before a command's own (their declarations, read by `eval_command`)."""


def _shared_last(device: DeviceOpt = "auto", dtype: DtypeOpt = "auto", out: OutOpt = None, seed: SeedOpt = 0,
                 quiet: QuietOpt = False) -> None:
    """The shared options listed after a command's own."""


def eval_command(name: str):
    """Register ``function(target: EvalTarget, **own options)`` as ``longrope eval NAME``: the shared options are
    declared once (`_shared_first`, `_shared_last`) and reach it as one `EvalTarget`."""
    first = list(inspect.signature(_shared_first, eval_str=True).parameters.values())
    last = list(inspect.signature(_shared_last, eval_str=True).parameters.values())
    shared = [p.name for p in first + last]

    def register(function):
        own = list(inspect.signature(function, eval_str=True).parameters.values())[1:]  # after `target`

        def command(**options):
            target = EvalTarget(**{key: options.pop(key) for key in shared})
            return function(target, **options)

        command.__signature__ = inspect.Signature(first + own + last)
        command.__doc__, command.__name__ = function.__doc__, function.__name__
        eval_app.command(name)(command)
        return function
    return register


def _length_terms(text: str) -> list[tuple[float, bool]]:
    """The terms of --lengths as (number, is a multiple of the window), each finite and > 0.

    Needs no model, so the command checks them before loading one.
    """
    terms = []
    for part in text.split(","):
        part = part.strip().lower()
        multiple = part.endswith("x")
        try:
            value = float(part[:-1] if multiple else part)
        except ValueError:
            raise LongRopeError(f"--lengths: {part!r} is not a number or a multiple like 2x") from None
        if not (math.isfinite(value) and value > 0):
            raise LongRopeError(f"--lengths: every length must be a finite number > 0, got {part!r}")
        terms.append((value, multiple))
    return terms


def parse_lengths(text: str | None, window: int) -> list[int]:
    """'256,1024' or '1x,2x' (multiples of the original window) -> sorted positive lengths."""
    if text is None or not text.strip():
        return [window, 2 * window, 4 * window, 8 * window]
    out = []
    for value, multiple in _length_terms(text):
        tokens = value * window if multiple else value
        if not math.isfinite(tokens) or tokens != int(tokens) or tokens < 2:
            raise LongRopeError(f"--lengths: every length must be a whole number of tokens >= 2, got "
                                f"{f'{value:g}x = {tokens:g}' if multiple else f'{value:g}'}")
        out.append(int(tokens))
    return sorted(set(out))


def check_options(command: str, target: EvalTarget, counts: dict[str, int | None]) -> Path:
    """Reject bad options before the model loads; return the output directory (``counts``: option -> value >= 1).

    Without this a file named by --out failed only when the report was written, after the whole evaluation.
    """
    check_precision(target.device, target.dtype)
    check_number("--factor", target.factor, minimum=1)  # the specs' own range: 1 = no extension
    if target.lengths is not None and target.lengths.strip():
        _length_terms(target.lengths)
    for option, value in counts.items():
        check_number(option, value, minimum=1)
    build_specs(target.method, target.factor or 2.0, 0)  # a bad --method name or spec file, before any model
    out = check_output_dir("--out", target.out or Path("longrope-eval") / command)
    if (out / f"{command}.json").exists():
        console.print(f"note: {out / f'{command}.json'} exists and will be replaced when this evaluation ends",
                      markup=False, soft_wrap=True)  # a path may hold brackets
    return out


def default_factor(lengths: list[int], window: int) -> float:
    return float(max(1, math.ceil(max(lengths) / window)))


STRING_ON = "string+"  # `string+yarn`: STRING over another method, preset or spec file (StringSpec.base)


def build_spec(method: str, factor: float, window: int) -> tuple[str, RopeSpec]:
    """(table name, spec) for a method name, a spec JSON file or a shipped preset's name, or ``string+`` one
    of them."""
    if method.startswith(STRING_ON):
        name, base = build_spec(method[len(STRING_ON):], factor, window)
        if isinstance(base, StringSpec):
            raise LongRopeError(f"{method}: STRING cannot sit on another STRING spec")
        return STRING_ON + name, StringSpec(base=base)
    path = Path(method).expanduser()
    if method.endswith(".json") or path.is_file():
        return path.stem, load_spec(path)
    if is_preset_name(method):
        return method, load_spec(method)
    cls = method_class(method)
    fields = {f.name for f in dataclasses.fields(cls)}
    if cls is StringSpec:
        return cls.method, StringSpec()  # S = 0.33 L, W = min(128, S/2): the spec's defaults
    if "factor" in fields and cls.method != "longrope":
        return cls.method, make_spec(cls.method, factor=factor)
    if cls.method == "longrope":
        raise LongRopeError("longrope needs searched factors: pass the spec JSON written by `longrope search`")
    return cls.method, make_spec(cls.method)


def build_specs(methods: list[str] | None, factor: float, window: int) -> dict[str, RopeSpec]:
    specs: dict[str, RopeSpec] = {}
    for method in methods or DEFAULT_METHODS:
        name, spec = build_spec(method, factor, window)
        while name in specs:
            name += "'"
        specs[name] = spec
    return specs


def _setup(target: EvalTarget):
    """The loaded model and tokenizer, the lengths, one spec per method, and the settings a report records."""
    from longrope.attention.rotary import model_geometry
    from longrope.hardware import model_record
    from longrope.models.loading import load_model

    model, tokenizer = load_model(target.model, dtype=target.dtype, device=target.device)
    geometry = model_geometry(model)
    for method in target.method or ():
        check_preset_fits(method.removeprefix(STRING_ON), geometry)
    window = geometry.original_window
    lengths = parse_lengths(target.lengths, window)
    factor = target.factor if target.factor is not None else default_factor(lengths, window)
    specs = build_specs(target.method, factor, window)
    settings = {"model": target.model, **model_record(model), "original_window": window, "lengths": lengths,
                "factor": factor, "methods": {n: s.to_dict() for n, s in specs.items()}}
    return model, tokenizer, lengths, specs, settings


def _template(template: str, model_name: str) -> str:
    from longrope.eval.passkey import default_template

    if template == "auto":
        return default_template(model_name)
    return template


def _evaluate(command: str, evaluate: Callable[[], T], write: Callable[[T, dict], dict]) -> tuple[T, dict]:
    """Run ``evaluate`` and write its report with ``write(result, extra settings)``; on Ctrl-C, write the
    methods finished so far (marked ``interrupted``) and say where they are."""
    try:
        result = evaluate()
    except EvaluationInterrupted as stop:
        paths = write(stop.partial, {"interrupted": True})
        stop.longrope_message = (f"eval {command} stopped; the methods finished before it are in {paths['json']}; "
                                 "run the same command again for all of them")
        raise
    return result, write(result, {})


def _finish(markdown: str, paths: dict) -> None:
    console.print(Markdown(markdown))
    for kind, path in paths.items():
        console.print(f"[dim]{kind}:[/] {escape(str(path))}", soft_wrap=True)


@eval_command("ppl")
def ppl_command(
    target: EvalTarget,
    corpus: Annotated[str, typer.Option("--corpus",
                                        help="stdlib, a file or directory, or hf:NAME[:column]")] = "stdlib",
    split: Annotated[str, typer.Option("--split", help="Corpus split")] = "test",
    n_docs: Annotated[int, typer.Option("--n-docs", help="Documents (the same ones at every length)")] = 8,
    mode: Annotated[str, typer.Option("--mode", help="truncate (one window per document) or sliding")] = "truncate",
    stride: Annotated[int | None, typer.Option(
        "--stride", help="Sliding-window stride (sliding mode; default 256, or half the shortest length if smaller)")
    ] = None,
    chunk: Annotated[int, typer.Option("--chunk", help="Positions per output-head chunk")] = 1024,
) -> None:
    """Perplexity of each method at each length (`longrope.eval.evaluate_ppl`); writes ppl.json, ppl.md, ppl.png."""
    from longrope.eval.perplexity import MODES, evaluate_ppl, write_ppl_report

    if mode not in MODES:
        raise LongRopeError(f"--mode: unknown perplexity mode {mode!r}; choose one of: {', '.join(MODES)}")
    check_text("--corpus", corpus)
    check_text("--split", split)
    out = check_options("ppl", target, {"--n-docs": n_docs, "--stride": stride, "--chunk": chunk})

    loaded, tokenizer, lengths_list, specs, settings = _setup(target)
    if stride is None:
        stride = max(1, min(256, min(lengths_list) // 2))
    settings.update(corpus=corpus, split=split, n_docs=n_docs, mode=mode, stride=stride, chunk=chunk)
    table, paths = _evaluate(
        "ppl", lambda: evaluate_ppl(loaded, tokenizer, specs, corpus, lengths_list, n_docs=n_docs, mode=mode,
                                    stride=stride, chunk=chunk, seed=target.seed, split=split,
                                    progress=not target.quiet),
        lambda result, extra: write_ppl_report(result, out, {**settings, **extra}, seed=target.seed))
    _finish(f"**Perplexity ({mode}, {n_docs} documents)**\n\n" + table.to_markdown(), paths)


@eval_command("passkey")
def passkey_command(
    target: EvalTarget,
    trials: Annotated[int, typer.Option("--trials", help="Trials per length: a random key each, depths stratified "
                                        "(trial i of n in [i/n, (i+1)/n) of the prompt)")] = 10,
    template: TemplateOpt = "auto",
    max_new_tokens: MaxNewTokensOpt = 10,
) -> None:
    """Passkey retrieval accuracy per method and length (`longrope.eval.evaluate_passkey`)."""
    out = check_options("passkey", target, {"--trials": trials, "--max-new-tokens": max_new_tokens})
    from longrope.eval.passkey import evaluate_passkey, write_retrieval_report

    loaded, tokenizer, lengths_list, specs, settings = _setup(target)
    chosen = _template(template, target.model)
    table, paths = _evaluate(
        "passkey", lambda: evaluate_passkey(loaded, tokenizer, specs, lengths_list, trials=trials, seed=target.seed,
                                            template=chosen, max_new_tokens=max_new_tokens, progress=not target.quiet),
        lambda result, extra: write_retrieval_report(result, out, {**settings, **extra}, seed=target.seed))
    _finish(f"**Passkey accuracy ({chosen} template, {trials} trials per length)**\n\n" + table.to_markdown(), paths)


@eval_command("needle")
def needle_command(
    target: EvalTarget,
    depths: Annotated[int, typer.Option("--depths", help="Number of depths from 0% to 100%")] = 5,
    trials: Annotated[int, typer.Option("--trials", help="Keys per (length, depth) cell")] = 2,
    template: TemplateOpt = "auto",
    max_new_tokens: MaxNewTokensOpt = 10,
) -> None:
    """Needle-in-a-haystack grid (depth x length) per method, with heatmaps (`longrope.eval.evaluate_needle`)."""
    out = check_options("needle", target, {"--depths": depths, "--trials": trials, "--max-new-tokens": max_new_tokens})
    from longrope.eval.needle import evaluate_needle, write_needle_report

    loaded, tokenizer, lengths_list, specs, settings = _setup(target)
    chosen = _template(template, target.model)
    settings.update(depths=depths, trials=trials, template=chosen)
    grids, paths = _evaluate(
        "needle", lambda: evaluate_needle(loaded, tokenizer, specs, lengths_list, depths=depths, trials=trials,
                                          seed=target.seed, template=chosen, max_new_tokens=max_new_tokens,
                                          progress=not target.quiet),
        lambda result, extra: write_needle_report(result, out, specs, {**settings, **extra}, seed=target.seed))
    markdown = "".join(f"**{name}**\n\n{grid.to_markdown()}\n" for name, grid in grids.items())
    _finish(markdown, paths)


@eval_command("ruler")
def ruler_command(
    target: EvalTarget,
    tasks: Annotated[str, typer.Option("--tasks", help="Comma list of single, multikey, multivalue, vartrack")] = (
        "single,multikey,multivalue,vartrack"),
    samples: Annotated[int, typer.Option("--samples", help="Prompts per task and length")] = 5,
    style: Annotated[str, typer.Option("--style", help="natural, code, or auto")] = "auto",
    corpus: Annotated[str, typer.Option("--corpus", help="Haystack corpus")] = "stdlib",
    split: Annotated[str, typer.Option("--split")] = "test",
) -> None:
    """RULER-style tasks per method and length (`longrope.eval.evaluate_ruler`)."""
    from longrope.eval.ruler import TASKS, evaluate_ruler, write_ruler_report

    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in task_list if t not in TASKS]
    if unknown or not task_list:
        raise LongRopeError(f"--tasks: {'unknown task(s) ' + ', '.join(map(repr, unknown)) if unknown else 'no task'}"
                            f"; give a comma list of {', '.join(TASKS)}")
    check_text("--corpus", corpus)
    check_text("--split", split)
    out = check_options("ruler", target, {"--samples": samples})
    loaded, tokenizer, lengths_list, specs, settings = _setup(target)
    chosen = _template(style, target.model)
    settings.update(tasks=task_list, samples=samples, style=chosen, corpus=corpus, split=split)
    table, paths = _evaluate(
        "ruler", lambda: evaluate_ruler(loaded, tokenizer, specs, lengths_list, tasks=task_list, samples=samples,
                                        seed=target.seed, style=chosen, corpus=corpus, split=split,
                                        progress=not target.quiet),
        lambda result, extra: write_ruler_report(result, out, {**settings, **extra}, seed=target.seed))
    _finish(f"**RULER-style accuracy ({chosen} style)**\n\n" + table.to_markdown(), paths)
