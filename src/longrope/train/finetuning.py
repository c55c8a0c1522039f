"""Fine-tuning at an extended length with a fixed RoPE scaling spec (LongRoPE / PI / ... ; the paper's stage 2).

Recipe, as in the LongRoPE paper (section 4.1) and LongRoPE2 (section 3.3):

- the scaling spec is applied to the live model (`longrope.patch.apply`) and stays fixed;
- training data: the train-split documents that have at least ``length`` tokens, packed end to end
  (``BOS doc EOS BOS doc EOS ...``) and cut into sequences of exactly ``length`` tokens
  (`longrope.train.data.PackedSequences`);
- loss: next-token NLL with the output head and the cross-entropy applied a chunk at a time, each chunk
  recomputed in backward, so no [tokens x vocab] logits tensor exists in forward or backward;
- gradient checkpointing, bf16 autocast where the device supports it, AdamW with the paper's schedules
  (``linear`` from 2e-5, ``constant`` 1e-6, or a custom peak ``lr``), gradient accumulation, gradient clipping;
- optional LongRoPE2 mixed context window training: micro-batches alternate between long sequences with the
  scaled RoPE and short ones (original window) packed from short documents with the model's original RoPE;
- optional PoSE (``pose``): long sequences are short windows whose position ids skip through ``target_length``
  (`longrope.train.pose`), with ``target_length`` declared to the scaled RoPE (LongRoPE then uses long factors);
- checkpoints every ``save_every`` steps (model, optimizer, scheduler, RNG states, step), written to a
  temporary directory and renamed into place, so a killed run resumes from the last complete one;
- the result is a Hugging Face directory whose config.json keeps the model's ORIGINAL rope config (so stock
  transformers loads the raw weights) with ``longrope_spec.json`` beside it; `load_finetuned` loads it and
  re-applies the spec.

Device placement, mixed precision, accumulation and multi-process training go through `accelerate`; running
the same code on several GPUs (DDP, FSDP, DeepSpeed) needs only ``accelerate launch --config_file ...``
(see notes/finetune.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from longrope import patch
from longrope.atomic import atomic_dir
from longrope.data.corpus import get_corpus
from longrope.errors import LongRopeError
from longrope.eval.loss import decoder_and_head, hidden_nll
from longrope.eval.report import progress_bar
from longrope.rope import RopeSpec, load_spec, save_spec
from longrope.train.config import FinetuneConfig
from longrope.train.data import PackedSequences
from longrope.train.pose import pose_batch

SPEC_FILE = "longrope_spec.json"  # beside config.json in a fine-tuned model directory
SUMMARY_FILE = "longrope_finetune.json"  # written last into the model directory: its completeness marker
STATE_FILE = "trainer_state.json"  # written last into a checkpoint directory
LOG_FILE = "train_log.jsonl"


# ------------------------------------------------------------------------------------------------ the loss


def _chunk_nll_sum(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int,
                   logit_scale: float | None) -> torch.Tensor:
    return hidden_nll(head, hidden, labels, chunk, logit_scale).sum()


class ChunkedCausalLMLoss(nn.Module):
    """A causal LM whose forward returns the mean next-token NLL of ``input_ids`` [B, T].

    The decoder runs once; the output head and the loss run ``chunk`` positions at a time, each chunk under
    activation checkpointing, so only [B, chunk, vocab] logits exist at any moment, in forward and in backward.
    This module (not the bare LM) is what accelerate wraps, so DDP/FSDP see the whole computation.
    """

    def __init__(self, model: nn.Module, chunk: int = 1024):
        super().__init__()
        self.model = model
        self.chunk = chunk

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``position_ids`` [B, T] (e.g. PoSE's skipping ids); None: 0..T-1 as usual."""
        decoder, head = decoder_and_head(self.model)
        mask = None
        if position_ids is not None:
            # Without a mask, transformers (5.x) reads jumps in position ids as packed documents and attends only
            # within each piece; PoSE's chunks are one text, so an all-ones mask keeps plain causal attention.
            mask = torch.ones_like(input_ids)
        hidden = decoder(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                         use_cache=False).last_hidden_state[:, :-1]  # [B, T-1, H]
        labels = input_ids[:, 1:]  # [B, T-1]
        scale = getattr(self.model, "logit_scale", None)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, labels.shape[1], self.chunk):
            stop = min(start + self.chunk, labels.shape[1])
            part = (hidden[:, start:stop], labels[:, start:stop])
            if torch.is_grad_enabled():
                total = total + checkpoint(_chunk_nll_sum, head, *part, self.chunk, scale, use_reentrant=False)
            else:
                total = total + _chunk_nll_sum(head, *part, self.chunk, scale)
        return total / labels.numel()


# ------------------------------------------------------------------------------------------- saving, loading


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
    for candidate in (path, path / "model"):
        if (candidate / SPEC_FILE).is_file() and (candidate / "config.json").is_file():
            return candidate
    raise LongRopeError(f"{path} is not a fine-tuned model directory (no {SPEC_FILE} beside config.json)")


def load_finetuned(path: str | Path, dtype: str | torch.dtype = "float32", device: str = "cpu"):
    """``(model, tokenizer)`` of a fine-tuned directory, with its scaling spec applied (`longrope.patch`)."""
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


# --------------------------------------------------------------------------------------------- checkpoints


def _checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints (their state file exists), oldest first."""
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a fine-tuning output directory, or None."""
    found = _checkpoints(Path(out_dir))
    return found[-1] if found else None


# ----------------------------------------------------------------------------------------------- the run


def _oom_error(config: FinetuneConfig, exc: BaseException) -> LongRopeError:
    knobs = [
        f"a shorter length (now {config.length})",
        (f"a smaller batch (now {config.batch_size}) with more accumulation (now {config.accum}) to keep the "
         "tokens per step"),
    ]
    if not config.gradient_checkpointing:
        knobs.append("gradient checkpointing (it is off)")
    else:
        knobs.append("a smaller loss chunk" if config.loss_chunk > 256 else "bf16 mixed precision")
    knobs.append("more devices with FSDP or DeepSpeed through `accelerate launch` (notes/finetune.md)")
    return LongRopeError(f"out of memory fine-tuning at {config.length} tokens ({exc.__class__.__name__}); try "
                         + "; ".join(knobs))


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    from accelerate.utils import is_bf16_available

    return "bf16" if is_bf16_available() else "no"


class _RopeSwitch:
    """Puts the scaled spec (long batches) or the model's own RoPE (short batches) into the model, lazily."""

    def __init__(self, model: nn.Module, spec: RopeSpec, device: torch.device):
        self.model, self.spec, self.device = model, spec, device
        self.current: str | None = None

    def use(self, kind: str) -> None:
        if kind == self.current:
            return
        if kind == "long":
            patch.apply(self.model, self.spec)
        else:
            patch.restore(self.model)
            for _, _, module in patch.find_rotary_modules(self.model):
                module.to(self.device)
        self.current = kind


def _micro_plan(config: FinetuneConfig, micro: int) -> tuple[str, int]:
    """(kind, ordinal) of global micro-batch ``micro``: which stream it reads and its index in that stream."""
    if not config.mixed:
        return "long", micro
    return ("long" if micro % 2 == 0 else "short"), micro // 2


def _write_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def finetune(model: nn.Module, tokenizer, spec: RopeSpec, config: FinetuneConfig, out_dir: str | Path,
             resume: bool = False, progress: bool = True) -> Path:
    """Fine-tune ``model`` at ``config.length`` tokens with ``spec`` applied; return the saved model directory.

    Writes into ``out_dir``: ``checkpoints/step-NNNNNN/`` (resumable, every ``config.save_every`` steps),
    ``train_log.jsonl`` (one line per logged step) and ``model/`` (HF directory + ``longrope_spec.json``).
    With ``resume``, a finished ``model/`` is returned as is, and otherwise training continues from the newest
    checkpoint (same config and spec required). Without it, an ``out_dir`` holding a run is an error.
    The model is trained in place and left in eval mode with ``spec`` applied.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out_dir = Path(out_dir)
    final_dir = out_dir / "model"
    if not isinstance(spec, RopeSpec):
        raise LongRopeError(f"finetune needs a RopeSpec, got {spec!r}")
    if resume and is_finetuned(final_dir):
        summary = json.loads((final_dir / SUMMARY_FILE).read_text())
        try:
            same_config = FinetuneConfig.from_dict(summary["config"]).fingerprint() == config.fingerprint()
        except (KeyError, TypeError, LongRopeError):
            same_config = False
        if not same_config or summary.get("spec") != spec.with_window(
                patch.model_geometry(model).original_window).to_dict():
            raise LongRopeError(
                f"{out_dir} holds a finished fine-tune with a different config or spec; choose another --out"
            )
        return final_dir
    if not resume and (_checkpoints(out_dir) or final_dir.exists()):
        raise LongRopeError(f"{out_dir} already holds a fine-tuning run; resume it (--resume) or choose another --out")

    geometry = patch.model_geometry(model)
    window = geometry.original_window
    spec = spec.with_window(window)
    short_length = config.short_length or window
    long_length = config.target_length if config.pose else config.length  # what a long sequence stands for
    if config.mixed and short_length >= long_length:
        raise LongRopeError(
            f"mixed training: the short length ({short_length}) must be below the training length ({long_length})"
        )

    corpus = get_corpus(config.corpus, "train")
    long_data = PackedSequences(corpus, tokenizer, config.length, seed=config.seed, min_tokens=config.length,
                                what=f"fine-tuning at {config.length} tokens")
    short_data = None
    if config.mixed:
        short_data = PackedSequences(corpus, tokenizer, short_length, seed=config.seed + 1, min_tokens=2,
                                     max_tokens=window, what="mixed training (short documents)")

    mixed_precision = _mixed_precision(config.mixed_precision)
    accelerator = Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=config.accum)
    set_seed(config.seed)
    main = accelerator.is_main_process
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)

    model.train()
    if config.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise LongRopeError(f"{type(model).__name__} does not support gradient checkpointing; turn it off")
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    patch.apply(model, spec)

    wrapper = ChunkedCausalLMLoss(model, config.loss_chunk)
    decay = [p for n, p in wrapper.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in wrapper.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.peak_lr, betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    # The scheduler is stepped by hand once per optimizer step (not prepared: accelerate would step it once per
    # process), and registered so checkpoints carry it.
    accelerator.register_for_checkpointing(scheduler)
    inner = accelerator.unwrap_model(wrapper).model
    switch = _RopeSwitch(inner, spec, accelerator.device)
    switch.current = "long"

    start_step = 0
    log_path = out_dir / LOG_FILE
    checkpoint_dir = latest_checkpoint(out_dir) if resume else None
    if checkpoint_dir is not None:
        state = json.loads((checkpoint_dir / STATE_FILE).read_text())
        if state.get("config") != config.fingerprint() or state.get("spec") != spec.to_dict():
            raise LongRopeError(
                f"checkpoint {checkpoint_dir} was made with a different config or spec; resume with the same "
                "settings, or start a new run in another --out"
            )
        if state.get("num_processes", 1) != accelerator.num_processes:
            raise LongRopeError(
                f"checkpoint {checkpoint_dir} was made with {state.get('num_processes')} processes, now "
                f"{accelerator.num_processes}; resume with the same number"
            )
        switch.use("long")
        accelerator.load_state(str(checkpoint_dir))
        start_step = int(state["step"])
        if main and log_path.exists():  # drop log lines past the checkpoint (the killed run's tail)
            lines = [line for line in log_path.read_text().splitlines()
                     if line.strip() and json.loads(line).get("step", 0) <= start_step]
            log_path.write_text("".join(f"{line}\n" for line in lines))
    elif main:
        log_path.unlink(missing_ok=True)

    rank, world = accelerator.process_index, accelerator.num_processes
    started = time.perf_counter()
    history: list[dict] = []
    stack = contextlib.ExitStack()
    try:
        bar = stack.enter_context(progress_bar(progress and main))
        task = bar.add_task(f"fine-tune at {config.length}", total=config.steps, completed=start_step)
        for step in range(start_step, config.steps):
            losses: dict[str, list[float]] = {"long": [], "short": []}
            for a in range(config.accum):
                micro = step * config.accum + a
                kind, ordinal = _micro_plan(config, micro)
                data = long_data if kind == "long" else short_data
                first = (ordinal * world + rank) * config.batch_size
                batch = data.batch(range(first, first + config.batch_size)).to(accelerator.device)
                switch.use(kind)
                positions, declared = None, contextlib.nullcontext()
                if config.pose and kind == "long":
                    positions = pose_batch(config.length, config.target_length, config.pose_chunks, config.seed,
                                           range(first, first + config.batch_size)).to(accelerator.device)
                    # The window stands for a sequence of target_length tokens: length-dependent specs
                    # (LongRoPE long factors, dynamic NTK) must choose their tables for that length.
                    declared = patch.sequence_length(inner, config.target_length)
                with accelerator.accumulate(wrapper), declared:
                    with accelerator.autocast():
                        loss = wrapper(batch, position_ids=positions)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm:
                        accelerator.clip_grad_norm_(wrapper.parameters(), config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                losses[kind].append(loss.detach().float().item())
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            done = step + 1
            record = {"step": done, "lr": lr, "seconds": round(time.perf_counter() - started, 2)}
            for kind, values in losses.items():
                if values:
                    record[f"loss_{kind}"] = sum(values) / len(values)
            record["loss"] = sum(sum(v) for v in losses.values()) / sum(len(v) for v in losses.values())
            history.append(record)
            _after_step(record)
            if main and (done % config.log_every == 0 or done == config.steps or done == start_step + 1):
                _write_jsonl(log_path, record)
            bar.update(task, advance=1, description=f"fine-tune at {config.length} loss {record['loss']:.3f}")
            if config.save_every and done % config.save_every == 0 and done < config.steps:
                switch.use("long")
                _save_checkpoint(accelerator, out_dir, done, config, spec, world)
    except BaseException as exc:
        if _is_oom(exc):
            raise _oom_error(config, exc) from exc
        raise
    finally:
        stack.close()

    switch.use("long")
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - started
    summary = {
        "config": config.to_dict(),
        "spec": spec.to_dict(),
        "steps": config.steps,
        "resumed_from_step": start_step,
        "seconds_this_run": round(seconds, 1),
        "tokens_per_step": config.batch_size * config.accum * world * config.length,
        "mixed_precision": mixed_precision,
        "processes": world,
        "final_loss": history[-1]["loss"] if history else None,
        "source": getattr(model, "longrope_source", None),
    }
    state_dict = accelerator.get_state_dict(wrapper)
    if main:
        prefix = "model."
        state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}
        save_finetuned(inner, tokenizer, spec, final_dir, summary, state_dict=state_dict)
    accelerator.wait_for_everyone()
    if config.gradient_checkpointing:
        disable = getattr(inner, "activation_checkpointing_disable", None) or inner.gradient_checkpointing_disable
        disable()
    inner.eval()
    return final_dir


def _after_step(record: dict) -> None:
    """Called after every optimizer step with its log record (a hook for tests and callers that stop runs)."""


def _save_checkpoint(accelerator, out_dir: Path, step: int, config: FinetuneConfig, spec: RopeSpec,
                     world: int) -> Path:
    """Model, optimizer, scheduler and RNG states (accelerate) + our step, into ``checkpoints/step-NNNNNN``.

    Everything goes into a temporary directory first; the state file is written last and the directory is
    renamed into place, so a checkpoint either exists completely or not at all.
    """
    root = out_dir / "checkpoints"
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
        for old in _checkpoints(out_dir)[:-config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def mean_nll(model: nn.Module, samples: torch.Tensor, chunk: int = 1024) -> float:
    """Mean next-token NLL of ``samples`` [N, T] (no grad, bf16 autocast on CPU), e.g. to compare before/after."""
    loss = ChunkedCausalLMLoss(model, chunk)
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for row in samples:
            with torch.autocast(row.device.type, dtype=torch.bfloat16, enabled=row.device.type == "cpu"):
                total += loss(row[None]).item()
    model.train(was_training)
    return total / max(1, len(samples))


__all__ = [
    "SPEC_FILE",
    "ChunkedCausalLMLoss",
    "finetune",
    "finetuned_dir",
    "is_finetuned",
    "latest_checkpoint",
    "load_finetuned",
    "mean_nll",
    "save_finetuned",
]
