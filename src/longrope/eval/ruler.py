"""RULER-style synthetic tasks (Hsieh et al., 2024), with a haystack of real text from the built-in corpus.

Tasks (each prompt exactly ``length`` tokens, needles at random line boundaries of the haystack):

- ``single``: one needle (a key word and a 5-digit value); asked for the value.
- ``multikey``: four needles with different keys; asked for one key's value.
- ``multivalue``: four needles with the same key and different values; all four must be returned.
- ``vartrack``: a chain of assignments ``X1 = 12345``, ``X2 = X1``, ... (plus a distractor chain); asked
  for every variable that equals the value.

Scoring is RULER's string match: a sample's score is the fraction of expected strings found in the output
(0 or 1 for single answers); accuracy is the mean score, reported per task and length and averaged.

Two styles: ``natural`` (RULER's wording) and ``code`` (Python assignments and ``assert`` questions, for
models trained on source code such as the built-in tiny model). The haystack is source code from the
standard-library corpus (test split by default) either way.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from longrope.errors import LongRopeError
from longrope.hardware import model_record
from longrope.eval.generation import greedy_generate
from longrope.eval.passkey import bos_ids, encode
from longrope.eval.report import interrupted_with, markdown_table, write_report
from longrope.progress import progress_bar
from longrope.rope import RopeSpec

TASKS = ("single", "multikey", "multivalue", "vartrack")
STYLES = ("natural", "code")
_WORDS = ("apple", "river", "candle", "falcon", "marble", "garden", "violin", "copper", "meadow", "harbor",
          "pepper", "lantern", "orchid", "saddle", "tunnel", "walnut", "comet", "button", "anchor", "velvet")
MAX_NEW_TOKENS = {"single": 10, "multikey": 10, "multivalue": 40, "vartrack": 30}


@dataclass
class TaskPrompt:
    """What a task puts into a prompt: instruction, needles (in order), question, expected answers."""

    instruction: str
    needles: list[str]
    question: str
    expected: list[str]
    ordered: bool = False  # needles must appear in the given order (variable chains)


def _value(rng: random.Random) -> str:
    return str(rng.randint(10000, 99999))


def _var(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(5))


def make_task(task: str, rng: random.Random, style: str = "natural") -> TaskPrompt:
    """The needles, question and answers of one sample of ``task``."""
    if task not in TASKS:
        raise LongRopeError(f"unknown RULER task {task!r}; choose from: {', '.join(TASKS)}")
    if style not in STYLES:
        raise LongRopeError(f"unknown RULER style {style!r}; choose from: {', '.join(STYLES)}")
    code = style == "code"
    if code:
        instruction = "# Some special magic numbers are hidden in this file. Memorize them.\n"
        needle = "magic_number_{key} = {value}\n"
    else:
        instruction = ("Some special magic numbers are hidden within the following text. Make sure to memorize "
                       "it. I will quiz you about the numbers afterwards.\n")
        needle = "One of the special magic numbers for {key} is: {value}.\n"
    if task in ("single", "multikey"):
        keys = rng.sample(_WORDS, 1 if task == "single" else 4)
        values = [_value(rng) for _ in keys]
        asked = rng.randrange(len(keys))
        needles = [needle.format(key=k, value=v) for k, v in zip(keys, values)]
        if code:
            question = f"\nassert magic_number_{keys[asked]} =="
        else:
            question = (f"\nWhat is the special magic number for {keys[asked]} mentioned in the provided text? "
                        f"The special magic number for {keys[asked]} mentioned in the provided text is")
        return TaskPrompt(instruction, needles, question, [values[asked]])
    if task == "multivalue":
        key = rng.choice(_WORDS)
        values = [_value(rng) for _ in range(4)]
        if code:
            needles = [f"magic_numbers_{key}.append({v})\n" for v in values]
            question = f"\nassert magic_numbers_{key} == ["
        else:
            needles = [needle.format(key=key, value=v) for v in values]
            question = (f"\nWhat are all the special magic numbers for {key} mentioned in the provided text? "
                        f"The special magic numbers for {key} mentioned in the provided text are")
        return TaskPrompt(instruction, needles, question, values)
    # vartrack: a chain of 4 names holding one value, and a distractor chain of 4 names holding another.
    value, other = _value(rng), _value(rng)
    names = [_var(rng) for _ in range(8)]
    chain, distractor = names[:4], names[4:]
    needles = []
    for ch, val in ((chain, value), (distractor, other)):
        statements = [f"VAR {ch[0]} = {val}"] + [f"VAR {ch[i]} = VAR {ch[i - 1]}" for i in range(1, 4)]
        needles.append([s + "\n" for s in statements])
    merged = [s for pair in zip(*needles) for s in pair]  # interleave the chains, each in its own order
    if code:
        instruction = "# Track the variables assigned below.\n"
        question = f"\n# All variables assigned the value {value}:"
    else:
        instruction = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n"
        question = (f"\nQuestion: Find all variables that are assigned the value {value} in the text above. "
                    f"Answer: According to the chain(s) of variable assignment in the text above, 4 variables are "
                    f"assigned the value {value}, they are:")
    return TaskPrompt(instruction, merged, question, chain, ordered=True)


def string_match_score(output: str, expected: Sequence[str]) -> float:
    """Fraction of ``expected`` strings that occur in ``output`` (RULER's string_match_all)."""
    if not expected:
        return 0.0
    lower = output.lower()
    return sum(e.lower() in lower for e in expected) / len(expected)


class Haystack:
    """Lines of the corpus as token ids, long enough for prompts of ``tokens`` tokens."""

    def __init__(self, tokenizer, corpus="stdlib", split: str = "test", tokens: int = 4096):
        if isinstance(corpus, str):
            from longrope.data.corpus import get_corpus

            corpus = get_corpus(corpus, split)
        lines: list[str] = []
        total_chars = 0
        want_chars = 6 * tokens + 20_000  # generous: code is 3-4 characters per token
        for document in corpus.documents():
            for line in document.text.splitlines(keepends=True):
                if line.strip() and len(line) < 400:
                    lines.append(line if line.endswith("\n") else line + "\n")
                    total_chars += len(line)
            if total_chars >= want_chars:
                break
        self.lines = [ids for ids in tokenizer(lines, add_special_tokens=False)["input_ids"] if ids]
        self.total = sum(len(ids) for ids in self.lines)
        if self.total < tokens:
            raise LongRopeError(f"the corpus has only {self.total} tokens of text for a {tokens}-token haystack")

    def take(self, rng: random.Random, budget: int) -> list[list[int]]:
        """Consecutive lines from a random start holding exactly ``budget`` tokens (the last line cut)."""
        if budget > self.total:
            raise LongRopeError(f"haystack of {budget} tokens requested but only {self.total} are loaded")
        start = rng.randrange(len(self.lines))
        out, count, i = [], 0, start
        while count < budget:
            ids = self.lines[i % len(self.lines)][: budget - count]
            out.append(ids)
            count += len(ids)
            i += 1
        return out


def build_ruler_prompt(tokenizer, haystack: Haystack, task: TaskPrompt, length: int, rng: random.Random) -> list[int]:
    """Token ids (exactly ``length``): BOS, instruction, haystack lines with the needles at random boundaries,
    question."""
    head = bos_ids(tokenizer) + encode(tokenizer, task.instruction)
    needles = [encode(tokenizer, n) for n in task.needles]
    tail = encode(tokenizer, task.question)
    budget = length - len(head) - sum(len(n) for n in needles) - len(tail)
    if budget < 1:
        raise LongRopeError(
            f"length {length} is too short for this task: it needs more than {length - budget} tokens"
        )
    lines = haystack.take(rng, budget)
    slots = sorted(rng.randrange(len(lines) + 1) for _ in needles)  # line boundaries, in order
    body: list[int] = []
    j = 0
    for i in range(len(lines) + 1):
        while j < len(needles) and slots[j] == i:
            body += needles[j]
            j += 1
        if i < len(lines):
            body += lines[i]
    ids = head + body + tail
    assert len(ids) == length, (len(ids), length)
    return ids


@dataclass
class RulerSample:
    task: str
    length: int
    trial: int
    expected: list[str]
    output: str
    score: float


def ruler_samples(model: nn.Module, tokenizer, lengths: Sequence[int], tasks: Sequence[str] = TASKS,
                  samples: int = 5, seed: int = 0, style: str = "natural", corpus="stdlib", split: str = "test",
                  haystack: Haystack | None = None, progress: bool = True,
                  description: str = "ruler") -> list[RulerSample]:
    """``samples`` prompts per task and length with the model as it is now (seeded: every method sees the
    same prompts)."""
    if not lengths or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in lengths):
        raise LongRopeError(f"lengths must be positive integers, got {list(lengths)!r}")
    if samples < 1:
        raise LongRopeError(f"samples must be >= 1, got {samples}")
    for task in tasks:
        make_task(task, random.Random(0), style)  # validate names before any work
    lengths = sorted(set(lengths))
    haystack = haystack or Haystack(tokenizer, corpus, split, max(lengths))
    out = []
    with progress_bar(progress) as bar:
        bar_task = bar.add_task(description, total=len(lengths) * len(tasks) * samples)
        for length in lengths:
            for task in tasks:
                for i in range(samples):
                    rng = random.Random(f"ruler-{seed}-{task}-{length}-{i}")
                    prompt = make_task(task, rng, style)
                    ids = build_ruler_prompt(tokenizer, haystack, prompt, length, rng)
                    generated = greedy_generate(model, torch.tensor(ids), MAX_NEW_TOKENS[task])
                    text = tokenizer.decode(generated, skip_special_tokens=True)
                    out.append(RulerSample(task, length, i, prompt.expected, text,
                                           string_match_score(text, prompt.expected)))
                    bar.advance(bar_task)
    return out


def ruler_accuracy(samples: Sequence[RulerSample]) -> dict[str, dict[int, float]]:
    """Mean score per task and length, plus an ``average`` row over tasks."""
    cells: dict[str, dict[int, list[float]]] = {}
    for s in samples:
        cells.setdefault(s.task, {}).setdefault(s.length, []).append(s.score)
    acc = {t: {n: sum(v) / len(v) for n, v in sorted(by.items())} for t, by in cells.items()}
    lengths = sorted({s.length for s in samples})
    acc["average"] = {n: sum(acc[t][n] for t in cells) / len(cells) for n in lengths}
    return acc


@dataclass
class RulerTable:
    lengths: list[int]
    tasks: list[str]
    specs: dict[str, RopeSpec | None]
    samples: dict[str, list[RulerSample]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)  # device, dtype, torch (`longrope.hardware.model_record`)

    def accuracy(self) -> dict[str, dict[str, dict[int, float]]]:
        return {m: ruler_accuracy(s) for m, s in self.samples.items()}

    def to_markdown(self) -> str:
        rows = []
        for method, by_task in self.accuracy().items():
            for task in [*self.tasks, "average"]:
                rows.append([method, task] + [f"{100 * by_task[task][n]:.0f}%" for n in self.lengths])
        return markdown_table(["method", "task"] + [str(n) for n in self.lengths], rows)

    def to_dict(self) -> dict[str, Any]:
        return {"lengths": self.lengths, "tasks": self.tasks,
                "specs": {m: (s.to_dict() if s is not None else None) for m, s in self.specs.items()},
                "accuracy": self.accuracy(), "machine": self.machine,
                "samples": {m: [asdict(x) for x in s] for m, s in self.samples.items()}}


def evaluate_ruler(model: nn.Module, tokenizer, specs: Mapping[str, RopeSpec | None], lengths: Sequence[int],
                   tasks: Sequence[str] = TASKS, samples: int = 5, seed: int = 0, style: str = "natural",
                   corpus="stdlib", split: str = "test", progress: bool = True) -> RulerTable:
    """RULER-style accuracy of every spec (None: the model's own RoPE); the model is left as it was."""
    from longrope.eval.perplexity import applied

    lengths = sorted(set(lengths))
    haystack = Haystack(tokenizer, corpus, split, max(lengths)) if lengths else None
    table = RulerTable(lengths, list(tasks), dict(specs), machine=model_record(model))
    for name, spec in specs.items():
        with applied(model, spec), interrupted_with(table):
            table.samples[name] = ruler_samples(model, tokenizer, lengths, tasks, samples, seed, style, corpus,
                                                split, haystack, progress, description=f"ruler {name}")
    return table


def write_ruler_report(table: RulerTable, out_dir: str | Path, settings: Mapping[str, Any] | None = None,
                       seed: int | None = None) -> dict[str, Path]:
    markdown = "# RULER-style accuracy\n\n" + table.to_markdown()
    return write_report(out_dir, "ruler", {"settings": dict(settings or {}), **table.to_dict()}, markdown, seed=seed)
