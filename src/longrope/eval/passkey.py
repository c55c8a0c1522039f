"""Passkey retrieval (Landmark Attention's protocol, as used by PI, YaRN and LongRoPE).

A prompt of exactly ``length`` tokens: an instruction, filler made of one short neutral unit repeated, a line
stating a random 5-digit key twice, more filler, and a question. The model decodes about 10 tokens greedily (KV
cache, inside ``patch.sequence_length``); the trial is correct if the first integer in the output equals the
key. Depths are stratified (trial i of n lies in [i/n, (i+1)/n)), so every run covers the whole prompt, ends
included. Each trial also records the mean log-likelihood of the answer's tokens (`` 12345``) given the prompt,
teacher-forced in one more forward: a continuous measure with less variance than the exact-match accuracy.
Keys and depths come from a seeded RNG per (seed, length, trial), so every method sees the same prompts.

Three templates: ``natural`` (the published wording), ``code`` (comment-line filler, a ``PASS_KEY = 12345``
line, question ``assert PASS_KEY ==``) for models trained on source code such as the built-in tiny model, and
``dict`` (the key in a dict literal, read back by subscript: the format held out of the tiny model's training).
The prompt is assembled from separately tokenised pieces, so its length is exact for any tokenizer.

Python use::

    from longrope.eval import passkey_trials
    trials = passkey_trials(model, tokenizer, lengths=[256, 1024], trials=10, template="code")
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from longrope.errors import LongRopeError
from longrope.hardware import model_record
from longrope.eval.generation import greedy_generate
from longrope.eval.report import interrupted_with, markdown_table, write_report
from longrope.progress import progress_bar
from longrope.rope import RopeSpec


@dataclass(frozen=True)
class PasskeyTemplate:
    """The text pieces of a passkey prompt; ``key_line`` contains ``{key}`` (stated twice)."""

    name: str
    instruction: str
    filler: str
    key_line: str
    question: str

    def __post_init__(self) -> None:
        if self.key_line.count("{key}") < 1:
            raise LongRopeError(f"passkey template {self.name!r}: key_line must contain {{key}}")
        if not self.filler:
            raise LongRopeError(f"passkey template {self.name!r}: filler is empty")


NATURAL = PasskeyTemplate(
    name="natural",
    instruction=("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                 "I will quiz you about the important information there."),
    filler=" The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.",
    key_line=" The pass key is {key}. Remember it. {key} is the pass key.",
    question=" What is the pass key? The pass key is",
)

CODE = PasskeyTemplate(
    name="code",
    instruction="# There is a PASS_KEY hidden in this file between many comment lines. Remember it.\n",
    filler="# The grass is green. The sky is blue. The sun is yellow.\n",
    key_line="PASS_KEY = {key}  # the pass key is {key}\n",
    question="assert PASS_KEY ==",
)

# The tiny model's held-out retrieval format (longrope.data.retrieval.HELD_OUT_FORMAT): a dict literal read back
# by subscript, a way of defining and asking for a value that its training windows never use.
DICT = PasskeyTemplate(
    name="dict",
    instruction="# There is a SETTINGS dict hidden in this file between many comment lines. Remember it.\n",
    filler=CODE.filler,
    key_line='SETTINGS = {{"pass_key": {key}}}\n',
    question='assert SETTINGS["pass_key"] ==',
)

TEMPLATES: dict[str, PasskeyTemplate] = {t.name: t for t in (NATURAL, CODE, DICT)}


def default_template(model_name: str) -> str:
    """``code`` for the built-in tiny model (trained on source code) and its rebuilds, ``natural`` otherwise."""
    return "code" if Path(str(model_name)).name.startswith("tiny") else "natural"


def get_template(template: str | PasskeyTemplate) -> PasskeyTemplate:
    if isinstance(template, PasskeyTemplate):
        return template
    if template not in TEMPLATES:
        raise LongRopeError(f"unknown passkey template {template!r}; choose one of: {', '.join(TEMPLATES)}")
    return TEMPLATES[template]


_INTEGER = re.compile(r"\d+")


def first_integer(text: str) -> int | None:
    """The first run of digits in ``text`` as an int, or None."""
    match = _INTEGER.search(text)
    return int(match.group()) if match else None


def score_passkey(output_text: str, key: int | str) -> bool:
    """True if the first integer in the generated text equals ``key`` (e.g. " 12345. The" for 12345)."""
    found = first_integer(output_text)
    return found is not None and found == int(key)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def bos_ids(tokenizer) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return [bos] if bos is not None else []


@dataclass
class Prompt:
    """A retrieval prompt: token ids (exactly the target length), the answer, and where the needle went."""

    ids: torch.Tensor  # [length]
    answer: str
    depth: float
    needle_start: int  # token index of the needle


def fill_to_length(tokenizer, head: list[int], needle: list[int], tail: list[int], filler: list[int],
                   length: int, depth: float) -> tuple[list[int], int]:
    """``head + filler + needle + filler + tail`` of exactly ``length`` tokens with the needle at ``depth``
    (fraction of the filler placed before it). Returns (ids, needle start index)."""
    if not 0.0 <= depth <= 1.0:
        raise LongRopeError(f"depth must be between 0 and 1, got {depth}")
    budget = length - len(head) - len(needle) - len(tail)
    if budget < 0:
        raise LongRopeError(
            f"length {length} is too short for this prompt: it needs at least {length - budget} tokens"
        )
    unit = len(filler)
    # Whole filler units around the needle; the partial units go at the outer ends (the tail of one unit
    # after the head, the start of one before the tail), so the needle sits within half a token of `depth`.
    before_tokens = round(depth * budget)
    whole, partial = divmod(before_tokens, unit)
    before = (filler[unit - partial:] if partial else []) + filler * whole
    whole, partial = divmod(budget - before_tokens, unit)
    after = filler * whole + filler[:partial]
    ids = head + before + needle + after + tail
    assert len(ids) == length, (len(ids), length)
    return ids, len(head) + len(before)


def build_passkey_prompt(tokenizer, length: int, key: int, depth: float,
                         template: str | PasskeyTemplate = "natural") -> Prompt:
    """A passkey prompt of exactly ``length`` tokens (BOS first when the tokenizer has one)."""
    t = get_template(template)
    head = bos_ids(tokenizer) + encode(tokenizer, t.instruction)
    needle = encode(tokenizer, t.key_line.format(key=key))
    tail = encode(tokenizer, t.question)
    ids, start = fill_to_length(tokenizer, head, needle, tail, encode(tokenizer, t.filler), length, depth)
    return Prompt(torch.tensor(ids, dtype=torch.long), str(key), depth, start)


@dataclass
class PasskeyTrial:
    length: int
    trial: int
    depth: float
    key: int
    output: str
    correct: bool
    answer_loglik: float | None = None  # mean log p (nats per token) of the answer's tokens after the prompt


def trial_rng(seed: int, length: int, trial: int) -> random.Random:
    """The RNG of one trial: the same (seed, length, trial) gives the same key and depth for every method."""
    return random.Random(f"passkey-{seed}-{length}-{trial}")


def run_passkey_trial(model: nn.Module, tokenizer, length: int, key: int, depth: float,
                      template: str | PasskeyTemplate = "natural", max_new_tokens: int = 10,
                      trial: int = 0) -> PasskeyTrial:
    prompt = build_passkey_prompt(tokenizer, length, key, depth, template)
    out = greedy_generate(model, prompt.ids, max_new_tokens)
    text = tokenizer.decode(out, skip_special_tokens=True)
    loglik = answer_loglik(model, prompt.ids, encode(tokenizer, f" {key}"), length + max_new_tokens)
    return PasskeyTrial(length, trial, depth, key, text, score_passkey(text, key), loglik)


@torch.no_grad()
def answer_loglik(model: nn.Module, prompt_ids: torch.Tensor, answer_ids: list[int], scaled_for: int) -> float:
    """Mean log-probability (nats per token) of ``answer_ids`` right after ``prompt_ids``, teacher-forced, with
    the tables a generation of ``scaled_for`` tokens uses (length-dependent scalings choose by it)."""
    from longrope.attention.patch import sequence_length

    device = next(model.parameters()).device
    answer = torch.tensor(answer_ids, dtype=torch.long, device=device)
    ids = torch.cat([torch.as_tensor(prompt_ids).reshape(-1).to(device), answer])[None]
    with sequence_length(model, scaled_for):
        # The last len(answer) + 1 positions: each predicts the next answer token, the last one what follows.
        logits = model(ids, logits_to_keep=len(answer_ids) + 1).logits[0, :-1].float()
    return float(torch.log_softmax(logits, dim=-1).gather(1, answer[:, None]).mean())


def _check_lengths(lengths: Sequence[int]) -> list[int]:
    if not lengths:
        raise LongRopeError("give at least one length")
    for n in lengths:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise LongRopeError(f"every length must be a positive integer, got {n!r}")
    return sorted(set(lengths))


KEY_RANGE = (10000, 99999)  # five-digit pass keys


def check_answer_budget(tokenizer, max_new_tokens: int) -> None:
    """Refuse a generation budget too small to spell a pass key with ``tokenizer``: every trial would fail and
    the table would show 0% for a reason that has nothing to do with the method."""
    needed = max(len(tokenizer.encode(str(key), add_special_tokens=False)) for key in KEY_RANGE)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < needed:
        raise LongRopeError(f"max_new_tokens = {max_new_tokens!r} cannot produce the answer: a five-digit pass key "
                            f"takes {needed} tokens with this tokenizer (the default 10 leaves room for a space)")


def passkey_trials(model: nn.Module, tokenizer, lengths: Sequence[int], trials: int = 10, seed: int = 0,
                   template: str | PasskeyTemplate = "natural", max_new_tokens: int = 10, progress: bool = True,
                   description: str = "passkey") -> list[PasskeyTrial]:
    """``trials`` passkey trials at each length with the model as it is now: a random key per trial, depths
    stratified (trial i's depth is random within [i/trials, (i+1)/trials)), so that every run covers the whole
    prompt, both ends included, rather than wherever chance puts them."""
    lengths = _check_lengths(lengths)
    if trials < 1:
        raise LongRopeError(f"trials must be >= 1, got {trials}")
    check_answer_budget(tokenizer, max_new_tokens)
    out = []
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=len(lengths) * trials)
        for length in lengths:
            for i in range(trials):
                rng = trial_rng(seed, length, i)
                key = rng.randint(*KEY_RANGE)
                depth = (i + rng.random()) / trials
                out.append(run_passkey_trial(model, tokenizer, length, key, depth, template, max_new_tokens, i))
                bar.advance(task)
    return out


def accuracy_by_length(trials: Sequence[PasskeyTrial]) -> dict[int, float]:
    by: dict[int, list[bool]] = {}
    for t in trials:
        by.setdefault(t.length, []).append(t.correct)
    return {n: sum(v) / len(v) for n, v in sorted(by.items())}


def answer_loglik_by_length(trials: Sequence[Any]) -> dict[int, float]:
    """Mean answer log-likelihood per length over the trials that have one (passkey trials)."""
    by: dict[int, list[float]] = {}
    for t in trials:
        if getattr(t, "answer_loglik", None) is not None:
            by.setdefault(t.length, []).append(t.answer_loglik)
    return {n: sum(v) / len(v) for n, v in sorted(by.items())}


@dataclass
class RetrievalTable:
    """Accuracy (0..1) of each method at each length, with every trial kept."""

    task: str
    lengths: list[int]
    specs: dict[str, RopeSpec | None]
    trials: dict[str, list[Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def accuracy(self) -> dict[str, dict[int, float]]:
        return {m: accuracy_by_length(t) for m, t in self.trials.items()}

    def answer_loglik(self) -> dict[str, dict[int, float]]:
        return {m: by for m, t in self.trials.items() if (by := answer_loglik_by_length(t))}

    def to_markdown(self) -> str:
        acc = self.accuracy()
        rows = [[m] + [f"{100 * acc[m].get(n, float('nan')):.0f}%" for n in self.lengths] for m in acc]
        text = markdown_table(["method"] + [str(n) for n in self.lengths], rows)
        loglik = self.answer_loglik()
        if loglik:
            rows = [[m] + [f"{by[n]:.3f}" if n in by else "" for n in self.lengths] for m, by in loglik.items()]
            text += ("\n\nMean log-likelihood of the answer's tokens (nats per token; higher is better):\n\n"
                     + markdown_table(["method"] + [str(n) for n in self.lengths], rows))
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "lengths": self.lengths,
                "specs": {m: (s.to_dict() if s is not None else None) for m, s in self.specs.items()},
                "accuracy": self.accuracy(), "answer_loglik": self.answer_loglik(),
                "trials": {m: [asdict(t) for t in ts] for m, ts in self.trials.items()}}


def evaluate_passkey(model: nn.Module, tokenizer, specs: Mapping[str, RopeSpec | None], lengths: Sequence[int],
                     trials: int = 10, seed: int = 0, template: str | PasskeyTemplate = "natural",
                     max_new_tokens: int = 10, progress: bool = True) -> RetrievalTable:
    """Passkey accuracy of every spec (None: the model's own RoPE) at every length; the model is left as it was."""
    from longrope.eval.perplexity import applied

    lengths = _check_lengths(lengths)
    t = get_template(template)
    table = RetrievalTable("passkey", lengths, dict(specs),
                           settings={"trials": trials, "template": asdict(t), "max_new_tokens": max_new_tokens,
                                     "machine": model_record(model)})
    for name, spec in specs.items():
        with applied(model, spec), interrupted_with(table):
            table.trials[name] = passkey_trials(model, tokenizer, lengths, trials, seed, t, max_new_tokens,
                                                progress, description=f"passkey {name}")
    return table


def write_retrieval_report(table: RetrievalTable, out_dir: str | Path, settings: Mapping[str, Any] | None = None,
                           seed: int | None = None) -> dict[str, Path]:
    """``<task>.json`` and ``<task>.md`` in ``out_dir``."""
    markdown = f"# {table.task} accuracy\n\n" + table.to_markdown()
    payload = {"settings": {**table.settings, **dict(settings or {})}, **table.to_dict()}
    return write_report(out_dir, table.task, payload, markdown, seed=seed)
