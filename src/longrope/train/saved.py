"""The on-disk format of a fine-tuning run: its model directory, metadata file, checkpoints and log.

A `longrope.train.finetune` output directory holds:

- ``model/``: a Hugging Face directory whose config.json keeps the model's ORIGINAL rope config (so stock
  transformers loads the raw weights), with ``longrope_spec.json`` beside it and ``longrope_finetune.json``
  (the run's summary) written last as its completeness marker; `load_finetuned` loads it and re-applies the spec;
- ``checkpoints/step-NNNNNN/``: resumable states (model, optimizer, scheduler, RNG states from accelerate, and
  ``trainer_state.json`` with our step, written last), each written to a temporary directory and renamed into
  place; only the newest ``keep_checkpoints`` are kept;
- ``train_log.jsonl``: one JSON line per logged step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from longrope.atomic import atomic_dir, atomic_write_text
from longrope.attention import patch
from longrope.errors import LongRopeError
from longrope.notes import note
from longrope.rope import SPEC_FILE, RopeSpec, load_spec, save_spec
from longrope.train.config import FinetuneConfig

MODEL_DIR = "model"  # the fine-tuned model directory inside a run's output directory
CHECKPOINTS_DIR = "checkpoints"
SUMMARY_FILE = "longrope_finetune.json"  # written last into the model directory: its completeness marker
STATE_FILE = "trainer_state.json"  # written last into a checkpoint directory
LOG_FILE = "train_log.jsonl"
CHECKPOINT_NAME = re.compile(r"step-\d+")  # step-NNNNNN, as `save_checkpoint` names them


# ------------------------------------------------------------------------------------ the model directory


def save_finetuned(model: nn.Module, tokenizer, spec: RopeSpec, out_dir: str | Path, summary: dict | None = None,
                   state_dict: dict | None = None) -> Path:
    """Save ``model`` (its config keeps the original rope settings), ``tokenizer`` and ``spec`` as an HF directory.

    ``longrope_spec.json`` sits beside config.json; ``longrope_finetune.json`` (``summary``) is written last and
    marks the directory complete. The directory appears atomically.
    """
    out_dir = Path(out_dir)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_spec(spec, tmp / SPEC_FILE)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary or {}, indent=2) + "\n")

    return atomic_dir(out_dir, write)


def finetuned_dir(path: str | Path) -> Path:
    """The model directory of a fine-tune: ``path`` itself or ``path/model`` (a `finetune` output directory)."""
    path = Path(path)
    for candidate in (path, path / MODEL_DIR):
        if (candidate / SPEC_FILE).is_file() and (candidate / "config.json").is_file():
            return candidate
    raise LongRopeError(f"{path} is not a fine-tuned model directory (no {SPEC_FILE} beside config.json)")


def load_finetuned(path: str | Path, dtype: str | torch.dtype = "float32", device: str = "cpu"):
    """``(model, tokenizer)`` of a fine-tuned directory, with its scaling spec applied (`longrope.attention.patch`)."""
    from longrope.models.loading import load_model

    directory = finetuned_dir(path)
    spec = load_spec(directory / SPEC_FILE)
    model, tokenizer = load_model(str(directory), dtype=dtype, device=device)
    patch.apply(model, spec)
    return model, tokenizer


def is_finetuned(path: str | Path) -> bool:
    """Whether ``path`` (or ``path/model``) is a complete fine-tuned model directory."""
    try:
        directory = finetuned_dir(path)
    except LongRopeError:
        return False
    return (directory / SUMMARY_FILE).is_file()


def read_summary(model_dir: Path) -> dict:
    """The ``longrope_finetune.json`` summary of a complete fine-tuned model directory."""
    return json.loads((model_dir / SUMMARY_FILE).read_text())


# --------------------------------------------------------------------------------------------- checkpoints


def checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints (named ``step-NNNNNN``, their state file exists), oldest first; anything else in
    the directory (a user's ``step-000004.bak`` copy, a killed save's temporary) is not one, and is left alone."""
    root = out_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if CHECKPOINT_NAME.fullmatch(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a fine-tuning output directory, or None."""
    found = checkpoints(Path(out_dir))
    return found[-1] if found else None


def checkpoint_state(checkpoint_dir: Path) -> dict:
    """Our part of a checkpoint (``step``, ``config`` fingerprint, ``spec``, ``num_processes``)."""
    path = checkpoint_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
        problem = None if isinstance(state, dict) and isinstance(state.get("step"), int) else "it holds no step"
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        problem = f"not JSON: {exc}"
    if problem is not None:
        raise LongRopeError(f"checkpoint {checkpoint_dir} is damaged ({path.name}: {problem}); delete that "
                            "directory to resume from the checkpoint before it")
    return state


def save_checkpoint(accelerator, out_dir: Path, step: int, config: FinetuneConfig, spec: RopeSpec,
                    world: int) -> Path:
    """Model, optimizer, scheduler and RNG states (accelerate) + our step, into ``checkpoints/step-NNNNNN``.

    Everything goes into a temporary directory first; the state file is written last and the directory is
    renamed into place, so a checkpoint either exists completely or not at all.
    """
    root = out_dir / CHECKPOINTS_DIR
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "config": config.fingerprint(), "spec": spec.to_dict(), "num_processes": world}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        for old in checkpoints(out_dir)[:-config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# ------------------------------------------------------------------------------------------------- the log


def append_log(path: Path, record: dict) -> None:
    """Append one record to a ``train_log.jsonl``."""
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def trim_log(path: Path, step: int) -> None:
    """Drop the log lines past ``step`` (a killed run's tail, when resuming from the checkpoint of ``step``),
    and any line that is not a record (the last one half-written by a killed run), with a note: the log only
    reports, so a damaged line is no reason to refuse the resume."""
    kept, damaged = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except (json.JSONDecodeError, RecursionError):
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("step", 0), (int, float)):
            damaged += bool(line.strip())
        elif record.get("step", 0) <= step:
            kept.append(line)
    if damaged:
        note(f"{path}: dropped {damaged} damaged line{'s' * (damaged > 1)} (a half-written line of a killed run)")
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


__all__ = [
    "CHECKPOINTS_DIR",
    "LOG_FILE",
    "MODEL_DIR",
    "STATE_FILE",
    "SUMMARY_FILE",
    "append_log",
    "checkpoint_state",
    "checkpoints",
    "finetuned_dir",
    "is_finetuned",
    "latest_checkpoint",
    "load_finetuned",
    "read_summary",
    "save_checkpoint",
    "save_finetuned",
    "trim_log",
]
