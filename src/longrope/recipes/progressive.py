"""The progressive extension recipe of the LongRoPE paper, run from one TOML plan (`longrope.recipes.plan`).

    stage 1  search      long factors at s1 x L on the pretrained model             -> best_spec.json
    stage 2  finetune    at L1 tokens with the stage-1 spec                            -> model/ (+ spec)
    stage 3  search      long factors at s2 x L (s2 > s1) on the fine-tuned model,
                         seeded with the stage-1 factors stretched by s2/s1           -> best_spec.json
    stage 4  search_short short factors at the original window L, long ones fixed   -> best_spec.json (both)
    stage 5  export      HF directory with rope_parameters of type longrope           -> hf/

Each stage writes into ``out_dir/NN-kind/`` and, when complete, a ``DONE`` file (JSON: the stage, a
fingerprint of the plan up to it, its outputs). A re-run skips complete stages and resumes the first
incomplete one from its own checkpoints (search state, fine-tuning checkpoints), so a killed pipeline loses at
most the work since the last checkpoint. A complete stage made by a different plan is an error, never silently
reused; one whose marker promises a file that is gone (a deleted ``best_spec.json``) is run again. The plan is
copied to ``out_dir/plan.toml``, and ``longrope extend OUT/plan.toml --out OUT`` resumes with that copy.

``STAGE_RUNNERS`` maps a stage kind to ``runner(stage, context, stage_dir, progress) -> outputs``; the
outputs (JSON) say what the stage produced: ``model`` (a model directory), ``spec`` (a spec file), ...
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from longrope.atomic import atomic_write_text
from longrope.errors import LongRopeError
from longrope.recipes.plan import EVALUATE_KEYS, EXPORT_KEYS, Plan, Stage, check_search_order, load_plan, search_config
from longrope.rope import SPEC_FILE, LongRopeSpec, load_spec
from longrope.train.config import FinetuneConfig

DONE = "DONE"
PLAN_COPY = "plan.toml"
# Beside the copy: the directory of the plan it was copied from, where the plan's relative paths (a fine-tune
# stage's ``spec``) are read, also when the run is resumed with the copy.
PLAN_ORIGIN = "plan_origin.txt"
SUMMARY = "pipeline.json"
# The outputs of a DONE marker that name a file or directory (relative to the stage's): a marker is believed
# only while they exist.
PROMISED_OUTPUTS = ("spec", "model", "export", "gguf")


@dataclass
class PipelineContext:
    """What the stages so far produced: the model to continue from and the current spec."""

    plan: Plan
    out_dir: Path
    model: str  # load_model argument: the plan's model, then the fine-tuned directory
    spec: Path | None = None  # latest spec file
    finetuned: bool = False
    stage_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"  # `longrope.hardware.resolve_device`: every stage's model goes there
    dtype: str = "auto"  # forward dtype of searches and scoring where a stage sets none (auto: measured fastest)
    plan_dir: Path | None = None  # where the plan's relative paths are read (None: the plan file's directory)

    def load(self, dtype: str | None = None):
        """``(model, tokenizer)`` to continue from (raw weights, original RoPE config), in ``dtype`` (default the
        plan's weights dtype; searches cast to their measured forward dtype themselves)."""
        from longrope.models.loading import load_model

        return load_model(self.model, dtype=dtype or self.plan.dtype, device=self.device)

    def load_tokenizer_and_geometry(self):
        """Tokenizer and rotary geometry of the current model without loading its weights."""
        from transformers import AutoConfig, AutoTokenizer

        from longrope.models.files import load_errors
        from longrope.models.loading import resolve_model_path
        from longrope.rope import RopeGeometry

        source, gguf = resolve_model_path(self.model)
        kwargs = {"gguf_file": gguf} if gguf else {}
        with load_errors(self.model, source):
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            config = AutoConfig.from_pretrained(source, **kwargs)
        config = getattr(config, "get_text_config", lambda: config)()
        return tokenizer, RopeGeometry.from_config(config)

    def absorb(self, stage: Stage, stage_dir: Path, outputs: dict[str, Any]) -> None:
        self.stage_outputs[stage.name] = outputs
        if "model" in outputs:
            self.model = str(stage_dir / outputs["model"])
            self.finetuned = True
        if "spec" in outputs:
            self.spec = stage_dir / outputs["spec"]


# ---------------------------------------------------------------------------------------------- runners


def _plan_path(ctx: PipelineContext, value: str) -> Path:
    path = Path(value).expanduser()
    base = ctx.plan_dir or (Path(ctx.plan.source).parent if ctx.plan.source else None)
    return base / path if base is not None and not path.is_absolute() else path


def _stretched_seed(previous: Path, factor: float, stage_dir: Path, geometry) -> Path | None:
    """The previous spec's per-pair factors stretched to the new scale: the second search's extra seed."""
    from longrope.rope import rescale_factors

    spec = load_spec(previous).with_window(geometry.original_window)
    old = float(getattr(spec, "factor", 1.0) or 1.0)
    if old <= 1.0:
        return None
    table = rescale_factors(spec, geometry)[0].tolist()
    stretched = [max(1.0, v * factor / old) for v in table]
    path = stage_dir / "seed_factors.json"
    return atomic_write_text(path, json.dumps(stretched) + "\n")


def run_search(stage: Stage, ctx: PipelineContext, stage_dir: Path, progress: bool) -> dict[str, Any]:
    """Search long factors on the current model (pretrained or fine-tuned)."""
    from longrope.search import search

    model, tokenizer = ctx.load()
    from longrope.attention.rotary import model_geometry

    geometry = model_geometry(model)
    config = search_config(stage, ctx.plan, {"dtype": ctx.dtype})
    factor, length = config.target(geometry.original_window)
    if ctx.spec is not None and config.factor_file is None:
        seed = _stretched_seed(ctx.spec, factor, stage_dir, geometry)
        if seed is not None:
            config.factor_file = str(seed)
    result = search(model, tokenizer, config, stage_dir, resume=True, progress=progress)
    return {"spec": result.spec_path.name, "factor": factor, "length": length, "ppl": result.perplexity,
            "evaluations": result.evaluations}


def run_finetune(stage: Stage, ctx: PipelineContext, stage_dir: Path, progress: bool) -> dict[str, Any]:
    """Fine-tune the current model with the latest spec (or the stage's own ``spec`` file)."""
    from longrope.train.finetuning import finetune

    settings = dict(stage.settings)
    spec_path = _plan_path(ctx, settings.pop("spec")) if "spec" in settings else ctx.spec
    if spec_path is None:
        raise LongRopeError(f"{stage.label}: no spec to fine-tune with")
    spec = load_spec(spec_path)
    config = FinetuneConfig.from_dict({"corpus": ctx.plan.corpus, "seed": ctx.plan.seed, **settings})
    model, tokenizer = ctx.load()
    model_dir = finetune(model, tokenizer, spec, config, stage_dir, resume=True, progress=progress)
    summary = json.loads((model_dir / "longrope_finetune.json").read_text())
    shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)  # the stage is complete: optimizer states go
    return {"model": model_dir.name, "spec": f"{model_dir.name}/{SPEC_FILE}", "final_loss": summary.get("final_loss")}


def run_search_short(stage: Stage, ctx: PipelineContext, stage_dir: Path, progress: bool) -> dict[str, Any]:
    """Search short factors at the original window on the current model, the latest long factors fixed."""
    from longrope.search import search_short

    long_spec = load_spec(ctx.spec)
    if not isinstance(long_spec, LongRopeSpec):
        raise LongRopeError(f"{stage.label}: short factors complete a longrope spec, the current one is "
                            f"{long_spec.method}")
    config = search_config(stage, ctx.plan, {"factor": long_spec.factor, "dtype": ctx.dtype})
    model, tokenizer = ctx.load()
    result = search_short(model, tokenizer, long_spec, config, stage_dir, resume=True, progress=progress)
    return {"spec": result.spec_path.name, "ppl": result.perplexity, "evaluations": result.evaluations}


def run_export(stage: Stage, ctx: PipelineContext, stage_dir: Path, progress: bool) -> dict[str, Any]:
    """Write the current model with the final spec as an HF directory (``hf/``; ``gguf = true`` adds
    ``hf/model.gguf``), planned first and published whole (`longrope.export.export_model`)."""
    from longrope.export.bundle import export_model
    from longrope.export.hf import GGUF_NAME

    settings = dict(stage.settings)
    unknown = sorted(set(settings) - set(EXPORT_KEYS))
    if unknown:
        raise LongRopeError(f"{stage.label}: unknown field(s) {', '.join(stage.field_name(k) for k in unknown)}; "
                            f"export takes {', '.join(EXPORT_KEYS)}")
    spec = load_spec(ctx.spec)
    model, tokenizer = ctx.load()
    plan = export_model(model, tokenizer, spec, stage_dir / "hf", force=True, **settings)
    outputs: dict[str, Any] = {"export": "hf", "spec_exported": spec.to_dict(), "lost": plan.lost}
    if plan.gguf is not None:
        outputs["gguf"] = f"hf/{GGUF_NAME}"
    return outputs


def run_evaluate(stage: Stage, ctx: PipelineContext, stage_dir: Path, progress: bool) -> dict[str, Any]:
    """Perplexity (test split) and passkey accuracy of the current model with the current spec."""
    from longrope.eval.passkey import evaluate_passkey, write_retrieval_report
    from longrope.eval.perplexity import evaluate_ppl, write_ppl_report

    settings = dict(stage.settings)
    lengths = settings.pop("lengths", None)
    docs = settings.pop("docs", 8)
    trials = settings.pop("passkey_trials", 10)
    if settings:
        raise LongRopeError(f"{stage.label}: unknown field(s) {', '.join(stage.field_name(k) for k in settings)}; "
                            f"evaluate takes {', '.join(EVALUATE_KEYS)}")
    model, tokenizer = ctx.load(ctx.dtype)  # scoring only: the fine-tuning weights' dtype does not matter
    from longrope.attention.rotary import model_geometry

    window = model_geometry(model).original_window
    lengths = lengths or [window, 4 * window]
    specs = {"final": load_spec(ctx.spec)}
    table = evaluate_ppl(model, tokenizer, specs, ctx.plan.corpus, lengths, n_docs=docs, split="test",
                         progress=progress)
    write_ppl_report(table, stage_dir)
    outputs: dict[str, Any] = {"ppl": {str(n): v for n, v in table.ppl()["final"].items()}}
    if trials:
        outputs["passkey"] = {}
        for length in lengths:  # one length at a time: a window too short for the prompt is skipped, not fatal
            try:
                retrieval = evaluate_passkey(model, tokenizer, specs, [length], trials=trials, progress=progress)
            except LongRopeError as exc:
                outputs["passkey"][str(length)] = f"skipped: {exc}"
                continue
            write_retrieval_report(retrieval, stage_dir / f"passkey-{length}")
            outputs["passkey"][str(length)] = retrieval.accuracy()["final"][length]
    return outputs


StageRunner = Callable[[Stage, PipelineContext, Path, bool], dict[str, Any]]
STAGE_RUNNERS: dict[str, StageRunner] = {
    "search": run_search,
    "finetune": run_finetune,
    "search_short": run_search_short,
    "export": run_export,
    "evaluate": run_evaluate,
}


# ----------------------------------------------------------------------------------------------- checks


def stage_lengths(plan: Plan, window: int) -> list[tuple[Stage, str, int]]:
    """(stage, split, tokens) that each stage needs documents of: searches read the validation split,
    fine-tuning the train split, evaluation the test split."""
    needs = []
    for stage in plan.stages:
        if stage.kind == "search":
            length = stage.settings.get("length") or round(float(stage.settings["factor"]) * window)
            needs.append((stage, stage.settings.get("split", "validation"), int(length)))
        elif stage.kind == "finetune":
            needs.append((stage, "train", int(stage.settings["length"])))
        elif stage.kind == "search_short":
            needs.append((stage, stage.settings.get("split", "validation"), window))
        elif stage.kind == "evaluate":
            for length in stage.settings.get("lengths") or [4 * window]:
                needs.append((stage, "test", int(length)))
    return needs


def check_lengths(plan: Plan, tokenizer, window: int, stages: list[Stage]) -> None:
    """Every length a pending stage needs must be reached by a document of the corpus (clear error if not), and
    each search extends further than the one before, now that the window turns a ``length`` into a scale."""
    from longrope.data.corpus import get_corpus
    from longrope.data.samples import document_lengths

    check_search_order(plan, window)
    pending = {s.index for s in stages}
    for stage, split, length in stage_lengths(plan, window):
        if stage.index not in pending:
            continue
        key, extended = ("length" if "length" in stage.settings else "factor"), length
        if "target_length" in stage.settings:  # a PoSE fine-tune: short windows, the target extends the window
            key, extended = "target_length", int(stage.settings["target_length"])
        if stage.kind in ("search", "finetune") and extended <= window:
            raise LongRopeError(
                f"{stage.field_name(key)}: {extended} tokens is not beyond the model's original window ({window})"
            )
        corpus = get_corpus(plan.corpus, split)
        lengths = document_lengths(corpus, tokenizer)
        longest = max(lengths.values(), default=0)
        if longest < length:
            key = "lengths" if stage.kind == "evaluate" else ("factor" if "factor" in stage.settings else "length")
            raise LongRopeError(
                f"{stage.field_name(key)}: the target length {length} is reached by no document of corpus "
                f"{plan.corpus!r} ({split} split; the longest has {longest} tokens); use a smaller scale or a "
                "corpus with longer documents"
            )
        docs = stage.settings.get("docs")
        if stage.kind == "search" and isinstance(docs, int):
            enough = sum(n >= length for n in lengths.values())
            if enough < docs:
                raise LongRopeError(
                    f"{stage.field_name('docs')} = {docs}: only {enough} documents of corpus {plan.corpus!r} "
                    f"({split} split) have {length} tokens"
                )


def preflight(ctx: PipelineContext, pending: list[Stage]) -> None:
    """Before running ``pending`` stages: check the corpus reaches every length they need (tokenizer only)."""
    tokenizer, geometry = ctx.load_tokenizer_and_geometry()
    check_lengths(ctx.plan, tokenizer, geometry.original_window, pending)


# ------------------------------------------------------------------------------------------------- runner


def _read_done(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's DONE marker, or None when there is none or it is damaged (the stage is then run again)."""
    try:
        marker = json.loads((stage_dir / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not (isinstance(marker, dict) and isinstance(marker.get("fingerprint"), str)
            and isinstance(marker.get("outputs"), dict)):
        return None
    return marker


def _missing_output(stage_dir: Path, marker: dict[str, Any]) -> Path | None:
    """The first file or directory the marker promises that does not exist (None: all are there)."""
    for key in PROMISED_OUTPUTS:
        value = marker["outputs"].get(key)
        if key in marker["outputs"] and (not isinstance(value, str) or not (stage_dir / value).exists()):
            return stage_dir / str(value)
    return None


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def extend(plan_path: str | Path | None, out_dir: str | Path, resume: bool = True, progress: bool = True,
           plan: Plan | None = None, device: str = "auto", dtype: str = "auto") -> Path:
    """Run a progressive plan (default: the shipped tiny plan) into ``out_dir``; return the final spec file.

    Every stage runs on ``device`` (``auto``: the GPU if there is one, `longrope.hardware`); searches and
    scoring compute in ``dtype`` unless their stage sets one (``auto``: the fastest measured there), fine-tuning
    keeps the plan's weights dtype. Complete stages (``DONE`` marker, same plan up to them) are skipped; the
    first incomplete one resumes from its own checkpoints. ``resume=False`` refuses an ``out_dir`` that already
    holds stages.
    """
    plan = plan or load_plan(plan_path)
    out_dir = Path(out_dir).expanduser()
    console = Console(stderr=True, quiet=not progress)
    existing = [out_dir / s.name for s in plan.stages if (out_dir / s.name).exists()]
    if existing and not resume:
        raise LongRopeError(f"{out_dir} already holds pipeline stages ({existing[0].name}, ...); resume it or choose "
                            "another output directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = PipelineContext(plan=plan, out_dir=out_dir, model=plan.model, device=device, dtype=dtype)
    plan_copy, origin = out_dir / PLAN_COPY, out_dir / PLAN_ORIGIN
    if plan.source and Path(plan.source).is_file():
        ctx.plan_dir = Path(plan.source).resolve().parent
        if not (plan_copy.exists() and os.path.samefile(plan.source, plan_copy)):
            shutil.copyfile(plan.source, plan_copy)
            atomic_write_text(origin, f"{ctx.plan_dir}\n")
        elif origin.is_file():  # resumed with the copy itself: its paths are the original plan's
            ctx.plan_dir = Path(origin.read_text(encoding="utf-8").strip())
    pending: list[Stage] = []
    done_markers: dict[int, dict[str, Any]] = {}
    for stage in plan.stages:
        marker = _read_done(out_dir / stage.name)
        if marker is not None and not pending:
            if marker.get("fingerprint") != plan.stage_fingerprint(stage):
                raise LongRopeError(
                    f"{out_dir / stage.name} was completed by a different plan (this stage or an earlier one "
                    f"changed); use another output directory, or delete {stage.name} and the stages after it"
                )
            missing = _missing_output(out_dir / stage.name, marker)
            if missing is not None:  # the stage (and so every later one) runs again and writes it anew
                console.print(f"[yellow]{escape(stage.name)}: its DONE marker names {escape(str(missing))}, which "
                              "does not exist; running the stage again[/]", soft_wrap=True)
                pending.append(stage)
                continue
            done_markers[stage.index] = marker
        else:
            pending.append(stage)

    summary: dict[str, Any] = {"plan": plan.source, "stages": {}}
    started = time.perf_counter()
    checked = False
    for stage in plan.stages:
        stage_dir = out_dir / stage.name
        if stage.index in done_markers:
            marker = done_markers[stage.index]
            ctx.absorb(stage, stage_dir, marker["outputs"])
            summary["stages"][stage.name] = {"skipped": True, "seconds": marker.get("seconds")}
            console.print(f"[dim]{escape(stage.name)}: done already, skipped[/]")
            continue
        if not checked:
            preflight(ctx, pending)
            checked = True
        console.print(f"[bold]{escape(stage.name)}[/]: {stage.kind} {escape(json.dumps(stage.settings, default=str))}",
                      soft_wrap=True)  # the settings hold the plan's paths and strings: text, not markup
        stage_dir.mkdir(parents=True, exist_ok=True)
        stage_started = time.perf_counter()
        outputs = STAGE_RUNNERS[stage.kind](stage, ctx, stage_dir, progress)
        seconds = round(time.perf_counter() - stage_started, 1)
        _write_json_atomic(stage_dir / DONE, {"stage": stage.to_dict(), "fingerprint": plan.stage_fingerprint(stage),
                                              "outputs": outputs, "seconds": seconds})
        ctx.absorb(stage, stage_dir, outputs)
        summary["stages"][stage.name] = {"skipped": False, "seconds": seconds, "outputs": outputs}
        console.print(f"{stage.name}: done in {seconds:.0f} s", markup=False)
    if ctx.spec is not None and not ctx.spec.is_file():  # never report a final spec that is not there
        raise LongRopeError(f"the final spec {ctx.spec} does not exist; delete the stage that made it and re-run")
    summary["seconds_this_run"] = round(time.perf_counter() - started, 1)
    summary["final_spec"] = str(ctx.spec) if ctx.spec else None
    summary["final_model"] = ctx.model
    _write_json_atomic(out_dir / SUMMARY, summary)
    if ctx.spec is None:
        raise LongRopeError("the plan produced no spec")
    return ctx.spec
