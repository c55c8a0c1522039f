"""Fine-tuning at an extended length with a fixed RoPE scaling spec (LongRoPE / PI / ... ; the paper's stage 2).

Recipe, as in the LongRoPE paper (section 4.1) and LongRoPE2 (section 3.3):

- the scaling spec is applied to the live model (`longrope.attention.apply`) and stays fixed;
- training data: the train-split documents that have at least ``length`` tokens, packed end to end
  (``BOS doc EOS BOS doc EOS ...``) and cut into sequences of exactly ``length`` tokens
  (`longrope.train.data.PackedSequences`);
- loss: next-token NLL with the output head and the cross-entropy applied a chunk at a time, each chunk
  recomputed in backward, so no [tokens x vocab] logits tensor exists in forward or backward;
- gradient checkpointing, bf16/fp16 autocast where it is fast on the device (`longrope.hardware`), AdamW with
  the paper's schedules
  (``linear`` from 2e-5, ``constant`` 1e-6, or a custom peak ``lr``), gradient accumulation, gradient clipping;
- optional LongRoPE2 mixed context-window training (``mixed``): a share ``mixed_short_share`` of the tokens are
  short sequences (original window) packed from documents of at most that window, attention masked across
  documents (position ids restart at 0 for each), with the model's original RoPE (or the spec's own short
  regime, LongRoPE's short factors); each micro-batch is all long or all short, chosen from its index alone
  (`longrope.train.mixing`), and a short one carries as many tokens as a long one;
- optional PoSE (``pose``): long sequences are short windows whose position ids skip through ``target_length``
  (`longrope.train.pose`), with ``target_length`` declared to the scaled RoPE (LongRoPE then uses long factors);
- checkpoints every ``save_every`` steps (model, optimizer, scheduler, RNG states, step), written to a
  temporary directory and renamed into place, so a killed run resumes from the last complete one;
- the result is a Hugging Face directory whose config.json keeps the model's ORIGINAL rope config (so stock
  transformers loads the raw weights) with ``longrope_spec.json`` beside it; `load_finetuned` loads it and
  re-applies the spec. The output directory's format (model directory, ``longrope_finetune.json``,
  checkpoints, log) is `longrope.train.saved`'s; its public names are re-exported here.

Device placement, mixed precision, accumulation and multi-process training go through `accelerate`; running
the same code on several GPUs (DDP, FSDP, DeepSpeed) needs only ``accelerate launch --config_file ...``
(see notes/finetune.md).

Over 400 lines: the recipe above as short steps (`_setup`, `_resume`, `_train`, `_finish`) that share one
`_Run`; the loss that the loop differentiates lives here too, as it is this recipe's and nobody else's.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.checkpoint import checkpoint

from longrope.attention import patch, rotary
from longrope.data.corpus import get_corpus
from longrope.errors import LongRopeError
from longrope.hardware import model_record
from longrope.loss import decoder_and_head, head_form, hidden_nll
from longrope.progress import progress_bar
from longrope.rope import RopeSpec
from longrope.train.config import FinetuneConfig
from longrope.train.data import PackedSequences, RetrievalMixed
from longrope.train.mixing import LONG, SHORT, micro_kind, short_probability, short_rows
from longrope.train.pose import pose_batch
from longrope.train.saved import (
    LOG_FILE,
    MODEL_DIR,
    append_log,
    checkpoint_state,
    checkpoints,
    finetuned_dir,
    is_finetuned,
    latest_checkpoint,
    load_finetuned,
    read_summary,
    save_checkpoint,
    save_finetuned,
    trim_log,
)

if TYPE_CHECKING:
    from accelerate import Accelerator


# ------------------------------------------------------------------------------------------------ the loss


def _chunk_nll_sum(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int,
                   form: tuple[str, float], weight: torch.Tensor | None = None) -> torch.Tensor:
    nll = hidden_nll(head, hidden, labels, chunk, form=form)
    return (nll if weight is None else nll * weight).sum()


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

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                packed: bool = False) -> torch.Tensor:
        """``position_ids`` [B, T] (e.g. PoSE's skipping ids); None: 0..T-1 as usual.

        ``packed``: the rows are documents packed end to end and ``position_ids`` restart at 0 at each
        (`longrope.train.data.document_positions`): attention stays within each document, and a document's first
        token is not scored (it does not follow from the one before it), so each document's loss is the loss it
        has alone (tests/train/test_mixing.py checks it against the documents scored separately).
        """
        decoder, head = decoder_and_head(self.model)
        form = head_form(self.model, input_ids)
        mask = weight = None
        if packed:
            if position_ids is None:
                raise LongRopeError("packed sequences need their document position ids")
            # No mask: transformers (5.x) then reads each restart of the position ids as a new document and
            # builds a causal mask within each (eager, SDPA; flash attention reads the ids itself).
            weight = (position_ids[:, 1:] != 0).to(torch.float32)  # [B, T-1]: 0 where the target starts a document
        elif position_ids is not None:
            # Without a mask, transformers (5.x) reads jumps in position ids as packed documents and attends only
            # within each piece; PoSE's chunks are one text, so an all-ones mask keeps plain causal attention.
            mask = torch.ones_like(input_ids)
        hidden = decoder(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                         use_cache=False).last_hidden_state[:, :-1]  # [B, T-1, H]
        labels = input_ids[:, 1:]  # [B, T-1]
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, labels.shape[1], self.chunk):
            stop = min(start + self.chunk, labels.shape[1])
            part = (hidden[:, start:stop], labels[:, start:stop])
            args = (self.chunk, form, None if weight is None else weight[:, start:stop])
            if torch.is_grad_enabled():
                total = total + checkpoint(_chunk_nll_sum, head, *part, *args, use_reentrant=False)
            else:
                total = total + _chunk_nll_sum(head, *part, *args)
        count = labels.numel() if weight is None else weight.sum().clamp(min=1)
        return total / count


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


def _mixed_precision(choice: str, device: torch.device) -> str:
    """accelerate's mixed-precision name for ``choice`` on ``device``, through `longrope.hardware.autocast_dtype`:
    ``auto`` is bf16 or fp16 only where it is fast (accelerate's own check says yes to bf16 on any CPU, where it
    can be 60x slower than fp32); an explicit bf16 is refused on a GPU without it and warned about where slow."""
    from longrope.hardware import autocast_dtype, dtype_name

    if choice == "no":
        return "no"
    chosen = autocast_dtype(device, choice)
    return "no" if chosen is None else dtype_name(chosen)


class _RopeSwitch:
    """Puts the RoPE of each kind of micro-batch into the model, lazily: the scaled spec for long ones; for short
    ones the model's own RoPE, or the spec itself where it has a short regime (LongRoPE's short factors and
    attention factor, dynamic NTK's plain RoPE, chosen by the rotary module from the short position ids), so the
    short part trains what the extended model runs inside its original window."""

    def __init__(self, model: nn.Module, spec: RopeSpec, device: torch.device):
        self.model, self.spec, self.device = model, spec, device
        self.current: str | None = None  # "spec" or "original": what the model holds now

    def use(self, kind: str) -> None:
        wanted = "spec" if kind == LONG or self.spec.length_dependent else "original"
        if wanted == self.current:
            return
        if wanted == "spec":
            patch.apply(self.model, self.spec)
        else:
            patch.restore(self.model)
            for _, _, module in rotary.find_rotary_modules(self.model):
                module.to(self.device)
        self.current = wanted


@dataclass(frozen=True)
class _MicroPlan:
    """Which stream each global micro-batch reads (`longrope.train.mixing`), and how many rows."""

    long_rows: int
    short_rows: int
    short_p: Fraction  # share of the micro-batches that are short (0 without mixed training)

    @classmethod
    def of(cls, config: FinetuneConfig, short_length: int) -> _MicroPlan:
        if not config.mixed:
            return cls(config.batch_size, 0, Fraction(0))
        rows = short_rows(config.batch_size, config.length, short_length)
        p = short_probability(config.mixed_short_share, config.batch_size * config.length, rows * short_length)
        return cls(config.batch_size, rows, p)

    def __call__(self, micro: int) -> tuple[str, int, int]:
        """(kind, ordinal in that kind's stream, rows) of global micro-batch ``micro``."""
        kind, ordinal = micro_kind(self.short_p, micro)
        return kind, ordinal, self.short_rows if kind == SHORT else self.long_rows


@dataclass
class _Run:
    """One fine-tuning run, as `_setup` builds it: what the training loop and `_finish` work with."""

    out_dir: Path
    spec: RopeSpec  # the caller's spec, with the model's original window
    accelerator: Accelerator
    mixed_precision: str
    wrapper: nn.Module  # the prepared `ChunkedCausalLMLoss`
    inner: nn.Module  # the language model inside it
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    switch: _RopeSwitch
    long_data: PackedSequences | RetrievalMixed
    short_data: PackedSequences | RetrievalMixed | None
    plan: _MicroPlan
    start_step: int = 0

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_FILE


def finetune(model: nn.Module, tokenizer, spec: RopeSpec, config: FinetuneConfig, out_dir: str | Path,
             resume: bool = False, progress: bool = True) -> Path:
    """Fine-tune ``model`` at ``config.length`` tokens with ``spec`` applied; return the saved model directory.

    Writes into ``out_dir``: ``checkpoints/step-NNNNNN/`` (resumable, every ``config.save_every`` steps),
    ``train_log.jsonl`` (one line per logged step) and ``model/`` (HF directory + ``longrope_spec.json``);
    the format is `longrope.train.saved`'s.
    With ``resume``, a finished ``model/`` is returned as is, and otherwise training continues from the newest
    checkpoint (same config and spec required). Without it, an ``out_dir`` holding a run is an error.
    The model is trained in place and left in eval mode with ``spec`` applied.
    """
    out_dir = Path(out_dir)
    final_dir = out_dir / MODEL_DIR
    if not isinstance(spec, RopeSpec):
        raise LongRopeError(f"finetune needs a RopeSpec, got {spec!r}")
    if resume and is_finetuned(final_dir):
        _check_finished(model, spec, config, out_dir, final_dir)
        return final_dir
    if not resume and (checkpoints(out_dir) or final_dir.exists()):
        raise LongRopeError(f"{out_dir} already holds a fine-tuning run; resume it (--resume) or choose another --out")

    run = _setup(model, tokenizer, spec, config, out_dir)
    _resume(run, config, resume)
    started = time.perf_counter()
    history = _train(run, config, progress, started)
    _finish(run, model, tokenizer, config, final_dir, history, started)
    return final_dir


# ------------------------------------------------------------------------------------------------- setup


def _check_finished(model: nn.Module, spec: RopeSpec, config: FinetuneConfig, out_dir: Path,
                    final_dir: Path) -> None:
    """Raise unless the finished fine-tune in ``final_dir`` was made with ``config`` and ``spec``."""
    summary = read_summary(final_dir)
    try:
        same_config = FinetuneConfig.from_dict(summary["config"]).fingerprint() == config.fingerprint()
    except (KeyError, TypeError, LongRopeError):
        same_config = False
    if not same_config or summary.get("spec") != spec.with_window(
            rotary.model_geometry(model).original_window).to_dict():
        raise LongRopeError(
            f"{out_dir} holds a finished fine-tune with a different config or spec; choose another --out"
        )


def _datasets(config: FinetuneConfig, tokenizer, window: int):
    """The long training sequences; for mixed training the short ones, documents of at most the original window
    (or, with ``short_documents = "cut"``, window-sized pieces of every document) packed into ``short_length``
    tokens, their position ids restarting per document, with the same share of retrieval windows (at most
    ``window`` tokens each) as the long ones; and the micro-batch plan."""
    short_length = config.short_length or window
    long_length = config.target_length if config.pose else config.length  # what a long sequence stands for
    if config.mixed and short_length >= long_length:
        raise LongRopeError(
            f"mixed training: the short length ({short_length}) must be below the training length ({long_length})"
        )

    corpus = get_corpus(config.corpus, "train")
    long_data = PackedSequences(corpus, tokenizer, config.length, seed=config.seed, min_tokens=config.length,
                                what=f"fine-tuning at {config.length} tokens")
    if config.retrieval_fraction:
        long_data = RetrievalMixed(long_data, config.retrieval_fraction, seed=config.seed)
    short_data = None
    if config.mixed:
        eos = 1 if tokenizer.eos_token_id is not None else 0  # BOS doc EOS must fit in the window
        whole = config.short_documents == "whole"
        short_data = PackedSequences(corpus, tokenizer, short_length, seed=config.seed + 1, min_tokens=2,
                                     max_tokens=window - eos if whole else None, piece=window,
                                     what="mixed training (short documents)")
        _warn_if_repeated(config, short_data, short_length)
        if config.retrieval_fraction:
            names = long_data.names if isinstance(long_data, RetrievalMixed) else None
            short_data = RetrievalMixed(short_data, config.retrieval_fraction, seed=config.seed + 1,
                                        piece=window, names=names)
    return long_data, short_data, _MicroPlan.of(config, short_length)


def _warn_if_repeated(config: FinetuneConfig, short_data: PackedSequences, short_length: int) -> None:
    """Warn when the short part would read its documents more than 4 times over (a small pool memorised)."""
    plan = _MicroPlan.of(config, short_length)
    tokens = float(plan.short_p) * config.steps * config.accum * plan.short_rows * short_length
    if config.short_documents == "whole" and tokens > 4 * short_data.total_tokens:
        warnings.warn(
            f"mixed training: the short part reads {tokens:.0f} tokens from {len(short_data.doc_ids)} documents of "
            f"at most the original window ({short_data.total_tokens} tokens), {tokens / short_data.total_tokens:.0f} "
            "times over; short_documents = 'cut' packs pieces of every document instead", stacklevel=3)


def _prepare_model(model: nn.Module, config: FinetuneConfig, spec: RopeSpec) -> None:
    """Training mode, gradient checkpointing if asked for, ``spec`` applied."""
    model.train()
    if config.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise LongRopeError(f"{type(model).__name__} does not support gradient checkpointing; turn it off")
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    patch.apply(model, spec)


def _optimizer(wrapper: nn.Module, config: FinetuneConfig) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """AdamW (no weight decay on biases and norms) and the config's learning-rate schedule."""
    decay = [p for n, p in wrapper.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in wrapper.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.peak_lr, betas=(0.9, 0.95),
    )
    return optimizer, LambdaLR(optimizer, config.lr_factor)


def _setup(model: nn.Module, tokenizer, spec: RopeSpec, config: FinetuneConfig, out_dir: Path) -> _Run:
    """Data, accelerator, the model made ready to train, optimizer and scheduler, all prepared by accelerate."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    window = rotary.model_geometry(model).original_window
    spec = spec.with_window(window)
    if config.mixed:
        _check_packing(model)
    long_data, short_data, plan = _datasets(config, tokenizer, window)

    # The model's device decides (a notebook's model stays where it was put; the CLI puts it on --device).
    device = next(model.parameters()).device
    mixed_precision = _mixed_precision(config.mixed_precision, device)
    accelerator = Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=config.accum,
                              cpu=device.type == "cpu")
    set_seed(config.seed)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)

    _prepare_model(model, config, spec)
    wrapper = ChunkedCausalLMLoss(model, config.loss_chunk)
    optimizer, scheduler = _optimizer(wrapper, config)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    # The scheduler is stepped by hand once per optimizer step (not prepared: accelerate would step it once per
    # process), and registered so checkpoints carry it.
    accelerator.register_for_checkpointing(scheduler)
    inner = accelerator.unwrap_model(wrapper).model
    switch = _RopeSwitch(inner, spec, accelerator.device)
    switch.current = "spec"
    return _Run(out_dir=out_dir, spec=spec, accelerator=accelerator, mixed_precision=mixed_precision,
                wrapper=wrapper, inner=inner, optimizer=optimizer, scheduler=scheduler, switch=switch,
                long_data=long_data, short_data=short_data, plan=plan)


def _check_packing(model: nn.Module) -> None:
    """Raise unless the model's attention masks packed documents apart from their position ids alone: transformers
    does so for the attention functions that have a mask function (eager, SDPA, flex, ours once registered) and
    for flash attention, which reads the ids itself; any other would silently attend across the short documents."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    name = getattr(model.config, "_attn_implementation", None) or "eager"
    if name in ALL_MASK_ATTENTION_FUNCTIONS or "flash" in name:
        return
    raise LongRopeError(
        f"mixed training packs short documents and masks attention between them, which attn_implementation "
        f"{name!r} does not do; load the model with attn_implementation='sdpa' or 'eager'"
    )


def _resume(run: _Run, config: FinetuneConfig, resume: bool) -> None:
    """With ``resume``, load the newest checkpoint (if any) and cut the log back to its step; else a fresh log."""
    checkpoint_dir = latest_checkpoint(run.out_dir) if resume else None
    if checkpoint_dir is None:
        if run.main:
            run.log_path.unlink(missing_ok=True)
        return
    state = checkpoint_state(checkpoint_dir)
    if state.get("config") != config.fingerprint() or state.get("spec") != run.spec.to_dict():
        raise LongRopeError(
            f"checkpoint {checkpoint_dir} was made with a different config or spec; resume with the same "
            "settings, or start a new run in another --out"
        )
    if state.get("num_processes", 1) != run.world:
        raise LongRopeError(
            f"checkpoint {checkpoint_dir} was made with {state.get('num_processes')} processes, now "
            f"{run.world}; resume with the same number"
        )
    run.switch.use(LONG)
    run.accelerator.load_state(str(checkpoint_dir))
    run.start_step = int(state["step"])
    if run.main and run.log_path.exists():  # drop log lines past the checkpoint (the killed run's tail)
        trim_log(run.log_path, run.start_step)


# ---------------------------------------------------------------------------------------- the training loop


def _train(run: _Run, config: FinetuneConfig, progress: bool, started: float) -> list[dict]:
    """Optimizer steps from ``run.start_step`` to ``config.steps``: logging, checkpoints; the step records."""
    history: list[dict] = []
    stack = contextlib.ExitStack()
    try:
        bar = stack.enter_context(progress_bar(progress and run.main))
        task = bar.add_task(f"fine-tune at {config.length}", total=config.steps, completed=run.start_step)
        for step in range(run.start_step, config.steps):
            losses = _accumulate(run, config, step)
            lr = run.optimizer.param_groups[0]["lr"]
            run.scheduler.step()
            done = step + 1
            record = {"step": done, "lr": lr, "seconds": round(time.perf_counter() - started, 2)}
            for kind, values in losses.items():
                if values:
                    record[f"loss_{kind}"] = sum(values) / len(values)
            record["loss"] = sum(sum(v) for v in losses.values()) / sum(len(v) for v in losses.values())
            history.append(record)
            _after_step(record)
            if run.main and (done % config.log_every == 0 or done == config.steps or done == run.start_step + 1):
                append_log(run.log_path, record)
            bar.update(task, advance=1, description=f"fine-tune at {config.length} loss {record['loss']:.3f}")
            if config.save_every and done % config.save_every == 0 and done < config.steps:
                run.switch.use(LONG)
                save_checkpoint(run.accelerator, run.out_dir, done, config, run.spec, run.world)
    except BaseException as exc:
        if _is_oom(exc):
            raise _oom_error(config, exc) from exc
        raise
    finally:
        stack.close()
    return history


def _accumulate(run: _Run, config: FinetuneConfig, step: int) -> dict[str, list[float]]:
    """The ``config.accum`` micro-batches of optimizer step ``step``; their losses by kind (long, short)."""
    accelerator = run.accelerator
    rank, world = accelerator.process_index, run.world
    losses: dict[str, list[float]] = {LONG: [], SHORT: []}
    for a in range(config.accum):
        micro = step * config.accum + a
        kind, ordinal, rows = run.plan(micro)
        first = (ordinal * world + rank) * rows
        indices = range(first, first + rows)
        positions, declared = None, contextlib.nullcontext()
        if kind == SHORT:
            batch, positions = run.short_data.batch(indices, positions=True)
            positions = positions.to(accelerator.device)
        else:
            batch = run.long_data.batch(indices)
        batch = batch.to(accelerator.device)
        run.switch.use(kind)
        if config.pose and kind == LONG:
            positions = pose_batch(config.length, config.target_length, config.pose_chunks, config.seed,
                                   indices).to(accelerator.device)
            # The window stands for a sequence of target_length tokens: length-dependent specs
            # (LongRoPE long factors, dynamic NTK) must choose their tables for that length.
            declared = patch.sequence_length(run.inner, config.target_length)
        with accelerator.accumulate(run.wrapper), declared:
            with accelerator.autocast():
                loss = run.wrapper(batch, position_ids=positions, packed=kind == SHORT)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(run.wrapper.parameters(), config.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        losses[kind].append(loss.detach().float().item())
    return losses


def _after_step(record: dict) -> None:
    """Called after every optimizer step with its log record (a hook for tests and callers that stop runs)."""


# ------------------------------------------------------------------------------------------------ finishing


def _finish(run: _Run, model: nn.Module, tokenizer, config: FinetuneConfig, final_dir: Path, history: list[dict],
            started: float) -> None:
    """Save the trained model into ``final_dir`` with its summary; leave it in eval mode with the spec applied."""
    accelerator, world = run.accelerator, run.world
    run.switch.use(LONG)
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - started
    summary = {
        "config": config.to_dict(),
        "spec": run.spec.to_dict(),
        "steps": config.steps,
        "resumed_from_step": run.start_step,
        "seconds_this_run": round(seconds, 1),
        "tokens_per_step": config.batch_size * config.accum * world * config.length,
        **({"short_rows": run.plan.short_rows, "short_micro_batch_share": float(run.plan.short_p)}
           if config.mixed else {}),
        "mixed_precision": run.mixed_precision,
        **model_record(run.inner),
        "processes": world,
        "final_loss": history[-1]["loss"] if history else None,
        "source": getattr(model, "longrope_source", None),
    }
    state_dict = accelerator.get_state_dict(run.wrapper)
    if run.main:
        prefix = "model."
        state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}
        save_finetuned(run.inner, tokenizer, run.spec, final_dir, summary, state_dict=state_dict)
    accelerator.wait_for_everyone()
    if config.gradient_checkpointing:
        inner = run.inner
        disable = getattr(inner, "activation_checkpointing_disable", None) or inner.gradient_checkpointing_disable
        disable()
    run.inner.eval()


# ----------------------------------------------------------------------------------------------- evaluation


def mean_nll(model: nn.Module, samples: torch.Tensor, chunk: int = 1024) -> float:
    """Mean next-token NLL of ``samples`` [N, T] (no grad; products in bf16/fp16 where `longrope.hardware` finds
    them fast on the model's device), e.g. to compare before/after."""
    from longrope.hardware import autocast_dtype

    loss = ChunkedCausalLMLoss(model, chunk)
    device = next(model.parameters()).device
    low = autocast_dtype(device)
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for row in samples:
            with torch.autocast(device.type, dtype=low) if low is not None else contextlib.nullcontext():
                total += loss(row[None].to(device)).item()
    model.train(was_training)
    return total / max(1, len(samples))


__all__ = [
    "ChunkedCausalLMLoss",
    "finetune",
    "finetuned_dir",
    "is_finetuned",
    "latest_checkpoint",
    "load_finetuned",
    "mean_nll",
    "save_finetuned",
]
