"""Perplexity at long context, the protocol of the PI / YaRN / LongRoPE evaluation scripts.

- ``truncate``: each sample is cut to ``length`` tokens (BOS first) and every token after the first is scored
  in one window (one forward pass).
- ``sliding``: windows of ``length`` tokens advance by ``stride``; each window scores only the tokens the
  previous window did not, so every token after the first is scored exactly once, with up to ``length - 1``
  tokens of context.

The output head and the loss run ``chunk`` positions at a time (`longrope.loss.token_nll`): no
[tokens x vocab] logits tensor is ever built. ``ppl = exp(total nll / total tokens)`` over all samples.

Python use (a loaded model, no CLI)::

    from longrope.eval import evaluate_ppl
    from longrope.rope import make_spec
    table = evaluate_ppl(model, tokenizer, {"none": make_spec("none"), "yarn": make_spec("yarn", factor=8)},
                         corpus="stdlib", lengths=[256, 2048], n_docs=8)
    print(table.to_markdown())
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from longrope.attention import patch, rotary
from longrope.errors import LongRopeError
from longrope.hardware import model_record
from longrope.eval.report import interrupted_with, markdown_table, plot_ppl, write_report
from longrope.loss import DEFAULT_CHUNK, token_nll
from longrope.progress import progress_bar
from longrope.rope import RopeSpec

MODES = ("truncate", "sliding")


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)


@dataclass
class PerplexityResult:
    """Perplexity of a set of samples at one length.

    nll: mean NLL of each sample (nats/token); tokens: tokens scored in each sample; characters: characters
    those tokens spell (empty when no tokenizer was given), for bits per character.
    """

    mode: str
    length: int
    stride: int | None
    nll: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    characters: list[int] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return int(sum(self.tokens))

    @property
    def total_nll(self) -> float:
        return float(sum(n * t for n, t in zip(self.nll, self.tokens)))

    @property
    def mean_nll(self) -> float:
        return self.total_nll / self.total_tokens if self.total_tokens else float("nan")

    @property
    def ppl(self) -> float:
        """exp(total NLL / total tokens) over all samples (tokens weighted, not samples)."""
        return math.exp(self.mean_nll) if self.total_tokens else float("nan")

    @property
    def bits_per_char(self) -> float:
        """Total NLL in bits over the characters the scored tokens spell: comparable across tokenizers."""
        chars = sum(self.characters)
        return nats_to_bits(self.total_nll) / chars if chars else float("nan")

    @property
    def sample_ppl(self) -> list[float]:
        return [math.exp(n) for n in self.nll]

    def to_dict(self) -> dict[str, Any]:
        characters = self.characters or [None] * len(self.nll)
        return {"mode": self.mode, "length": self.length, "stride": self.stride, "ppl": self.ppl,
                "mean_nll": self.mean_nll, "total_tokens": self.total_tokens,
                "bits_per_char": self.bits_per_char if self.characters else None,
                "samples": [{"nll": n, "ppl": math.exp(n), "tokens": t, "characters": c}
                            for n, t, c in zip(self.nll, self.tokens, characters)]}


def _check_length(length: int, name: str = "length") -> int:
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise LongRopeError(f"{name} must be an integer >= 2 tokens, got {length!r}")
    return length


def sliding_windows(total: int, length: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows ``(begin, end, first_scored)`` over ``total`` tokens: the window is ids[begin:end] and it scores
    the tokens at positions ``first_scored .. end-1`` (each position 1..total-1 exactly once)."""
    _check_length(length)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise LongRopeError(f"stride must be a positive integer, got {stride!r}")
    if stride >= length:
        raise LongRopeError(
            f"stride ({stride}) must be smaller than the window length ({length}) in sliding mode, otherwise the "
            "first token of each window has no context; use a smaller --stride or truncate mode"
        )
    windows = []
    previous_end = 1  # position 0 (BOS) is never scored
    begin = 0
    while True:
        end = min(begin + length, total)
        windows.append((begin, end, previous_end))
        previous_end = end
        if end >= total:
            return windows
        begin += stride


def _sample_nll(model: nn.Module, ids: torch.Tensor, mode: str, length: int, stride: int, chunk: int
                ) -> tuple[float, int]:
    """(sum of NLL, tokens scored) of one 1-D sample."""
    device = next(model.parameters()).device
    if mode == "truncate":
        window = ids[:length].to(device)[None]  # [1, T]
        with patch.sequence_length(model, window.shape[1]):
            nll = token_nll(model, window, chunk=chunk)[0]  # [T-1]
        return float(nll.double().sum()), nll.numel()
    total_nll, count = 0.0, 0
    for begin, end, first in sliding_windows(ids.numel(), length, stride):
        window = ids[begin:end].to(device)[None]
        with patch.sequence_length(model, end - begin):
            nll = token_nll(model, window, chunk=chunk)[0]  # nll[j] scores position begin + j + 1
        scored = nll[first - begin - 1:]
        total_nll += float(scored.double().sum())
        count += scored.numel()
    return total_nll, count


@torch.no_grad()
def perplexity(model: nn.Module, samples: Sequence[torch.Tensor], mode: str = "truncate", length: int | None = None,
               stride: int = 256, chunk: int = DEFAULT_CHUNK, progress: bool = True,
               description: str = "perplexity", tokenizer=None) -> PerplexityResult:
    """Perplexity of ``samples`` (1-D LongTensors of token ids, BOS first) with the model as it is now.

    truncate: each sample cut to ``length`` tokens and scored in one window (``length`` - 1 tokens scored).
    sliding: windows of ``length`` tokens every ``stride`` tokens, each token of the sample scored exactly once.
    ``length`` defaults to the longest sample. With ``tokenizer``, the characters of the scored tokens are
    counted too (``bits_per_char``).
    """
    if mode not in MODES:
        raise LongRopeError(f"unknown perplexity mode {mode!r}; choose one of: {', '.join(MODES)}")
    if not samples:
        raise LongRopeError("no samples to evaluate")
    samples = [torch.as_tensor(s).reshape(-1).long() for s in samples]
    length = _check_length(length if length is not None else max(s.numel() for s in samples))
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise LongRopeError(f"chunk must be a positive integer, got {chunk!r}")
    for i, sample in enumerate(samples):
        if mode == "truncate" and sample.numel() < length:
            raise LongRopeError(f"sample {i} has {sample.numel()} tokens, fewer than the length {length}")
        if sample.numel() < 2:
            raise LongRopeError(f"sample {i} has {sample.numel()} tokens; at least 2 are needed")
    if mode == "sliding":
        sliding_windows(length + 1, length, stride)  # validate stride before any work
    result = PerplexityResult(mode=mode, length=length, stride=stride if mode == "sliding" else None)
    was_training = model.training
    model.eval()
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(description, total=len(samples))
            for sample in samples:
                total, count = _sample_nll(model, sample, mode, length, stride, chunk)
                result.nll.append(total / count)
                result.tokens.append(count)
                if tokenizer is not None:  # every token after the first is scored
                    scored = sample[1:length] if mode == "truncate" else sample[1:]
                    result.characters.append(len(tokenizer.decode(scored.tolist())))
                bar.advance(task)
    finally:
        model.train(was_training)
    return result


# ------------------------------------------------------------------------------------- several specs


def spec_window(spec: RopeSpec, original_window: int) -> int:
    """The context length a spec was built for: original window x factor (STRING: of its base)."""
    factor = getattr(spec, "factor", None)
    if factor is None and hasattr(spec, "base"):
        factor = getattr(spec.base, "factor", None)
    window = spec.original_window or original_window
    return round(window * float(factor or 1.0))


@contextmanager
def applied(model: nn.Module, spec: RopeSpec | None):
    """Apply ``spec`` (None: the model's own RoPE) for the duration; put back whatever was there before."""
    before, layer_type = patch.current_spec(model), patch.scaled_layer_type(model)
    try:
        if spec is None:
            patch.restore(model)
        else:
            patch.apply(model, spec, layer_type)
        yield model
    finally:
        patch.restore(model)
        if before is not None:
            patch.apply(model, before, layer_type)


@dataclass
class PplTable:
    """Perplexity of each method at each length: ``results[method][length]``."""

    mode: str
    stride: int | None
    lengths: list[int]
    specs: dict[str, RopeSpec | None]
    results: dict[str, dict[int, PerplexityResult]] = field(default_factory=dict)
    original_window: int | None = None
    sample_ids: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)  # device, dtype, torch (`longrope.hardware.model_record`)

    def ppl(self) -> dict[str, dict[int, float]]:
        return {m: {n: r.ppl for n, r in by.items()} for m, by in self.results.items()}

    def bits_per_char(self) -> dict[str, dict[int, float]]:
        return {m: {n: r.bits_per_char for n, r in by.items()} for m, by in self.results.items()}

    def to_markdown(self) -> str:
        """Perplexity at each length, then bits per character at each length (comparable across tokenizers)."""
        bpc = self.bits_per_char()
        headers = ["method"] + [str(n) for n in self.lengths] + [f"bpc @{n}" for n in self.lengths]
        rows = [[m] + [self.results[m][n].ppl for n in self.lengths] + [bpc[m][n] for n in self.lengths]
                for m in self.results]
        return markdown_table(headers, rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "stride": self.stride, "lengths": self.lengths,
            "original_window": self.original_window,
            "specs": {m: (s.to_dict() if s is not None else None) for m, s in self.specs.items()},
            "ppl": self.ppl(), "bits_per_char": self.bits_per_char(),
            "results": {m: {str(n): r.to_dict() for n, r in by.items()} for m, by in self.results.items()},
            "sample_ids": self.sample_ids, "warnings": self.warnings, "machine": self.machine,
        }


def _resolve_corpus(corpus, split: str):
    if isinstance(corpus, str):
        from longrope.data.corpus import get_corpus

        return get_corpus(corpus, split)
    return corpus


def evaluate_ppl(model: nn.Module, tokenizer, specs: Mapping[str, RopeSpec | None], corpus, lengths: Sequence[int],
                 n_docs: int = 8, mode: str = "truncate", stride: int = 256, chunk: int = DEFAULT_CHUNK,
                 seed: int = 0, split: str = "test", sample_tokens: int | None = None,
                 progress: bool = True) -> PplTable:
    """Perplexity of every spec (name -> spec; None = the model's own RoPE) at every length.

    The same ``n_docs`` documents are used at every length: documents of at least ``sample_tokens`` tokens
    (default: the longest length) drawn with ``seed`` from ``corpus`` (a `Corpus` or a string such as
    ``"stdlib"``, read at ``split``). truncate mode cuts each to the length; sliding mode slides a window of
    the length over the whole sample. The model is left as it was.
    """
    if mode not in MODES:
        raise LongRopeError(f"unknown perplexity mode {mode!r}; choose one of: {', '.join(MODES)}")
    lengths = [_check_length(n, "every length") for n in lengths]
    if not lengths:
        raise LongRopeError("give at least one length")
    lengths = sorted(set(lengths))
    if not specs:
        raise LongRopeError("give at least one method")
    if isinstance(n_docs, bool) or not isinstance(n_docs, int) or n_docs < 1:
        raise LongRopeError(f"the number of documents must be a positive integer, got {n_docs!r}")
    if mode == "sliding":
        for n in lengths:
            sliding_windows(n + 1, n, stride)
    geometry = rotary.model_geometry(model)
    sample_tokens = sample_tokens or max(lengths)
    if sample_tokens < max(lengths):
        raise LongRopeError(f"sample_tokens ({sample_tokens}) must be at least the longest length {max(lengths)}")

    from longrope.data.samples import token_samples

    samples = token_samples(_resolve_corpus(corpus, split), tokenizer, min_tokens=sample_tokens, n=n_docs, seed=seed)
    table = PplTable(mode=mode, stride=stride if mode == "sliding" else None, lengths=lengths, specs=dict(specs),
                     original_window=geometry.original_window, machine=model_record(model))
    for name, spec in specs.items():
        built_for = spec_window(spec, geometry.original_window) if spec is not None else geometry.original_window
        row = {}
        with applied(model, spec), interrupted_with(table):
            for length in lengths:
                if length > built_for:
                    message = (f"{name}: length {length} is beyond the {built_for} tokens this scaling was built "
                               f"for (original window {geometry.original_window} x factor)")
                    warnings.warn(message, stacklevel=2)
                    table.warnings.append(message)
                row[length] = perplexity(
                    model, samples, mode=mode, length=length, stride=stride, chunk=chunk, progress=progress,
                    description=f"ppl {name} @ {length}", tokenizer=tokenizer,
                )
        table.results[name] = row
    return table


def write_ppl_report(table: PplTable, out_dir: str | Path, settings: Mapping[str, Any] | None = None,
                     seed: int | None = None) -> dict[str, Path]:
    """``ppl.json``, ``ppl.md`` and ``ppl.png`` (ppl vs length, log y, one line per method) in ``out_dir``."""
    markdown = f"# Perplexity ({table.mode})\n\n" + table.to_markdown()
    paths = write_report(out_dir, "ppl", {"settings": dict(settings or {}), **table.to_dict()}, markdown, seed=seed)
    paths["plot"] = plot_ppl(table.ppl(), Path(out_dir) / "ppl.png", title=f"perplexity ({table.mode})",
                             window=table.original_window)
    return paths
