"""What a fine-tuning run does: one validated dataclass, and the learning-rate schedules of the papers.

Schedules (LongRoPE paper, section 4.1):

- ``linear``: AdamW, learning rate 2e-5 decaying linearly to 0 over the run (their LLaMA2 recipe);
- ``constant``: a constant 1e-6 (their Mistral recipe);

``lr`` overrides the preset's peak value (small models want far larger rates than 7B ones); ``warmup_steps``
adds a linear warm-up to either.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from longrope.errors import LongRopeError
from longrope.train.pose import check_pose

SCHEDULES = {"linear": 2e-5, "constant": 1e-6}
SHORT_DOCUMENTS = ("whole", "cut")
MIXED_PRECISION = ("auto", "bf16", "fp16", "no")


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run at an extended length.

    length: tokens per training sequence (the extended window L' to train at; with ``pose``, the short window N).
    steps: optimizer steps (each ``batch_size * accum`` sequences per process).
    schedule / lr / warmup_steps: see the module docstring; ``lr=None`` takes the schedule's preset.
    batch_size: sequences per micro-batch; accum: micro-batches per optimizer step.
    mixed: LongRoPE2 mixed context-window training: besides the long sequences with the scaled RoPE, short
        sequences (``short_length`` tokens, default the original window) packed from documents of at most the
        original window, attention masked across documents and position ids restarting at 0 for each, trained
        with the original RoPE (a LongRoPE spec's short regime: its short factors and attention factor, what the
        model runs inside the window). A micro-batch is all long or all short (`longrope.train.mixing`).
    mixed_short_share: with ``mixed``, the share of the training tokens that are short (0 < share < 1). Default
        0.3, the top of LongRoPE2's range (1:9 to 3:7 short to long): the short part is what keeps the model
        good inside its original window, which the built-in model's plan lost most (issue 30). Ignored without
        ``mixed``.
    short_documents: with ``mixed``, what the short sequences are packed from: ``whole`` (LongRoPE2's) the
        documents of at most the original window, each whole; ``cut`` every document, cut into pieces of at
        most the window, each piece a document of its own (positions restart, attention masked at the cut): the
        windows a model is pre-trained on, for a corpus with few short documents (the stdlib's train split has
        196 of at most 256 tokens, 18k tokens in all, which a short part of 200k tokens would read 11 times).
    corpus: training documents (``longrope.data.corpus.get_corpus``), train split.
    save_every: write a resumable checkpoint every N optimizer steps (0: only at the end).
    keep_checkpoints: how many recent checkpoints to keep on disk.
    gradient_checkpointing: recompute activations in backward (memory for compute; needed at long lengths).
    mixed_precision: ``auto`` = bf16 where it is fast on the model's device (a GPU with bf16, a CPU where
        `longrope.hardware` measured bf16 faster than fp32), fp16 on a GPU without bf16, else none (fp32).
    loss_chunk: positions per output-head chunk of the loss (no [tokens x vocab] logits tensor).
    pose: PoSE (`longrope.train.pose`) — ``length`` is then the short training window N, and each long
        sequence gets position ids in ``pose_chunks`` chunks skipping through ``[0, target_length)``;
        target_length (L', required with pose) is also declared to the scaled RoPE as the sequence length.
    retrieval_fraction: share of the training sequences replaced by retrieval windows of the same length
        (`longrope.train.data.RetrievalMixed`): the built-in model's pre-training mixture, so its retrieval
        survives fine-tuning at a new length. With ``mixed`` it applies to the short sequences too (a replaced
        short sequence holds retrieval windows of at most the original window).
    """

    length: int
    steps: int
    schedule: str = "linear"
    lr: float | None = None
    warmup_steps: int = 0
    batch_size: int = 1
    accum: int = 1
    mixed: bool = False
    mixed_short_share: float = 0.3
    short_documents: str = "whole"
    short_length: int | None = None
    corpus: str = "stdlib"
    seed: int = 0
    save_every: int = 0
    keep_checkpoints: int = 2
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = True
    mixed_precision: str = "auto"
    loss_chunk: int = 1024
    log_every: int = 10
    pose: bool = False
    pose_chunks: int = 2
    target_length: int | None = None
    retrieval_fraction: float = 0.0

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, minimum: int = 1) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise LongRopeError(f"fine-tune: {name} must be an integer >= {minimum}, got {value!r}")

        positive_int("length", self.length, 2)
        positive_int("steps", self.steps)
        positive_int("batch_size", self.batch_size)
        positive_int("accum", self.accum)
        positive_int("warmup_steps", self.warmup_steps, 0)
        positive_int("save_every", self.save_every, 0)
        positive_int("keep_checkpoints", self.keep_checkpoints)
        positive_int("loss_chunk", self.loss_chunk)
        positive_int("log_every", self.log_every)
        if self.short_length is not None:
            positive_int("short_length", self.short_length, 2)
        for name in ("mixed", "gradient_checkpointing", "pose"):  # "false" would be true
            if not isinstance(getattr(self, name), bool):
                raise LongRopeError(f"fine-tune: {name} must be true or false, got {getattr(self, name)!r}")
        for name in ("schedule", "mixed_precision", "corpus", "short_documents"):
            if not isinstance(getattr(self, name), str):
                raise LongRopeError(f"fine-tune: {name} must be a string, got {getattr(self, name)!r}")
        for name in ("weight_decay", "max_grad_norm"):  # NaN slips through a plain `< 0`
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= 0):
                raise LongRopeError(f"fine-tune: {name} must be a finite number >= 0, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise LongRopeError(
                f"fine-tune: unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)} "
                "(and set lr for a custom peak rate)"
            )
        if self.lr is not None and (isinstance(self.lr, bool) or not (
                isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0)):
            raise LongRopeError(f"fine-tune: lr must be a positive number, got {self.lr!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise LongRopeError(
                f"fine-tune: mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}"
            )
        share = self.mixed_short_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
            raise LongRopeError(
                f"fine-tune: mixed_short_share must be a number between 0 and 1 (the share of short tokens; "
                f"LongRoPE2 uses 0.1 to 0.3), got {share!r}"
            )
        if self.short_documents not in SHORT_DOCUMENTS:
            raise LongRopeError(f"fine-tune: short_documents must be one of {', '.join(SHORT_DOCUMENTS)}, got "
                                f"{self.short_documents!r}")
        fraction = self.retrieval_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise LongRopeError(f"fine-tune: retrieval_fraction must be a number in [0, 1], got {fraction!r}")
        if self.pose:
            if self.target_length is None:
                raise LongRopeError("fine-tune: pose needs target_length, the extended length L' its positions span")
            check_pose(self.length, self.target_length, self.pose_chunks)
        elif self.target_length is not None:
            raise LongRopeError(
                "fine-tune: target_length is PoSE's target; set pose = true, or train at length = the target"
            )
        if self.warmup_steps >= self.steps and self.warmup_steps:
            raise LongRopeError(
                f"fine-tune: warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})"
            )

    @property
    def peak_lr(self) -> float:
        return float(self.lr) if self.lr is not None else SCHEDULES[self.schedule]

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``peak_lr`` for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        remaining = self.steps - self.warmup_steps
        return max(0.0, 1.0 - (step - self.warmup_steps) / remaining)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - valid
        if unknown:
            raise LongRopeError(
                f"fine-tune: unknown setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(valid))}"
            )
        missing = [name for name in ("length", "steps") if name not in data]
        if missing:
            raise LongRopeError(f"fine-tune: missing setting(s) {', '.join(missing)}")
        return cls(**data)

    def fingerprint(self) -> str:
        """What must match for a checkpoint to be resumed (everything but bookkeeping knobs)."""
        data = self.to_dict()
        for name in ("save_every", "keep_checkpoints", "log_every"):
            data.pop(name)
        if not self.pose:  # so runs started before PoSE existed still resume
            for name in ("pose", "pose_chunks", "target_length"):
                data.pop(name)
        if not self.retrieval_fraction:  # likewise for runs before the retrieval mixture
            data.pop("retrieval_fraction")
        if not self.mixed:  # the share means nothing then, and runs before it existed still resume
            data.pop("mixed_short_share")
            data.pop("short_documents")
        return json.dumps(data, sort_keys=True)
