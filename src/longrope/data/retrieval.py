"""The retrieval curriculum mixed into the tiny model's pre-training: windows that define values and ask for one.

A retrieval window is ``length`` tokens: BOS, filler (real code from the training stream, or a few neutral
comment lines repeated, as in passkey prompts), one to four definitions of distinct names (constants such as
``PASS_KEY`` or identifiers of the corpus) with distinct numbers placed at random depths, and at the end a
question about one of them followed by its value. The distractor definitions force a lookup by name rather
than "copy the only number in sight", and the many formats (different separators between name and value) make
the lookup a skill rather than one memorised pattern.

The formats trained on are ``TRAIN_FORMATS``. ``HELD_OUT_FORMAT`` (a dict literal read back by subscript) never
appears in training windows; the ``dict`` passkey template measures whether retrieval generalises to it.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from longrope.errors import LongRopeError


@dataclass(frozen=True)
class RetrievalFormat:
    """How a value is defined and asked for; ``{name}`` and ``{value}`` are filled in, ``question`` ends right
    before the value (the value and a newline follow it)."""

    name: str
    definition: str
    question: str

    def define(self, name: str, value: str) -> str:
        return self.definition.format(name=name, value=value)

    def ask(self, name: str) -> str:
        return self.question.format(name=name)


TRAIN_FORMATS: tuple[RetrievalFormat, ...] = (
    RetrievalFormat("assignment", "{name} = {value}\n", "assert {name} =="),
    RetrievalFormat("commented_assignment", "{name} = {value}  # the {name} is {value}\n", "assert {name} =="),
    RetrievalFormat("function", "def {name}():\n    return {value}\n", "assert {name}() =="),
    RetrievalFormat("keyword_argument", "configure({name}={value})\n", "assert options.{name} =="),
    RetrievalFormat("comment", "# remember: the {name} is {value}\n", "# recall: the {name} is"),
    RetrievalFormat("sentence", "The {name} is {value}. Remember it.\n", "What is the {name}? The {name} is"),
)
# With ``mixed`` pairing a window pairs any of these definitions with any of these questions, so no pair can be
# memorised: the model has to find the asked name and copy the number that follows it. None quotes the name as
# a dict key or subscript (the held-out format).
DEFINITIONS = tuple(f.definition for f in TRAIN_FORMATS) + (
    "self.{name} = {value}\n", "{name}: int = {value}\n", "{name} -> {value}\n", "let {name} = {value};\n",
    "set {name} to {value}\n", "--{name} {value}\n", "{name} equals {value}\n", "<{name}>{value}</{name}>\n",
    "export {name}={value}\n", "{name} := {value}\n", "{name}({value})\n", "[{name}] {value}\n",
)
QUESTIONS = tuple(dict.fromkeys(f.question for f in TRAIN_FORMATS)) + (
    "assert self.{name} ==", "print({name})  # prints", "echo ${name} ->", "lookup {name} =>", "get {name}:",
    "the value of {name} is", "{name} ==", "return {name}  # returns",
)
HELD_OUT_FORMAT = RetrievalFormat("dict_literal", 'SETTINGS = {{"{name}": {value}}}\n', 'assert SETTINGS["{name}"] ==')

# Half of the windows name their values with these constants instead of identifiers from the corpus: a few
# anchors that recur often let the copying mechanism form early; the varied names then teach lookup by name.
CONSTANT_NAMES = (
    "PASS_KEY", "SECRET_KEY", "MAGIC_NUMBER", "API_TOKEN", "RANDOM_SEED", "PORT_NUMBER", "USER_ID", "PIN_CODE",
)

# Filler sentences for the neutral-comment windows. The passkey templates' own filler is deliberately absent.
NEUTRAL_LINES = (
    "# nothing to see here", "# keep going", "# more text follows", "# this line is filler",
    "# the weather is fine today", "# read the rest of the file", "# the river runs to the sea",
    "# a quiet line of text", "# the cat sleeps on the mat", "# trees grow tall in spring",
    "# the road is long and straight", "# birds sing in the morning",
)

_IDENTIFIER = re.compile(r"\b[A-Za-z][A-Za-z0-9_]{2,15}\b")


def identifier_pool(texts: Iterable[str], size: int = 2000) -> list[str]:
    """The ``size`` most common identifiers of ``texts`` (names for the definitions), most common first."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_IDENTIFIER.findall(text))
    return [name for name, _ in counts.most_common(size)]


def _value(rng: random.Random, digits: tuple[int, ...]) -> str:
    """A number with one of ``digits`` digits (drawn uniformly from the tuple), never starting with 0."""
    n = rng.choice(digits)
    return str(rng.randrange(10 ** (n - 1), 10**n))


def _neutral_filler(tokenizer, room: int, rng: random.Random) -> list[int]:
    """``room`` tokens of one to three neutral comment lines repeated in a random order."""
    lines = rng.sample(NEUTRAL_LINES, rng.randint(1, 3))
    filler: list[int] = []
    while len(filler) < room:
        filler += tokenizer.encode(rng.choice(lines) + "\n", add_special_tokens=False)
    return filler[:room]


PAIRINGS = ("fixed", "mixed")


def retrieval_window(stream: torch.Tensor, length: int, tokenizer, names: list[str], rng: random.Random,
                     pairing: str = "fixed", digits: tuple[int, ...] = (5,)) -> torch.Tensor:
    """One training window of exactly ``length`` tokens (see the module docstring). ``pairing``: ``fixed``
    draws one of ``TRAIN_FORMATS``; ``mixed`` pairs any of ``DEFINITIONS`` with any of ``QUESTIONS``.
    ``digits``: the lengths of the values, drawn uniformly from the tuple."""
    if pairing == "mixed":
        fmt = RetrievalFormat("mixed", rng.choice(DEFINITIONS), rng.choice(QUESTIONS))
    elif pairing == "fixed":
        fmt = rng.choice(TRAIN_FORMATS)
    else:
        raise LongRopeError(f"unknown retrieval pairing {pairing!r}; choose one of: {', '.join(PAIRINGS)}")
    pool = CONSTANT_NAMES if rng.random() < 0.5 else names
    count = min(len(pool), rng.choice((1, 1, 1, 2, 3, 4)))
    chosen = rng.sample(pool, count)
    values: list[str] = []
    while len(values) < count:
        value = _value(rng, digits)
        if value not in values:
            values.append(value)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    definitions = [newline + tokenizer.encode(fmt.define(n, v), add_special_tokens=False)
                   for n, v in zip(chosen, values)]
    target = rng.randrange(count)
    tail = newline + tokenizer.encode(f"{fmt.ask(chosen[target])} {values[target]}\n", add_special_tokens=False)
    room = length - 1 - sum(map(len, definitions)) - len(tail)
    if room < 0:  # a short window: keep only the asked definition
        definitions = [definitions[target]]
        room = length - 1 - len(definitions[0]) - len(tail)
        if room < 0:
            raise LongRopeError(f"a {length}-token window is too short for a retrieval example")
    if rng.random() < 0.5:
        start = rng.randrange(0, stream.numel() - room)
        filler = stream[start : start + room].tolist()
    else:
        filler = _neutral_filler(tokenizer, room, rng)
    cuts = sorted(rng.randint(0, room) for _ in definitions)
    ids = [tokenizer.bos_token_id]
    previous = 0
    for cut, definition in zip(cuts, definitions):
        ids += filler[previous:cut] + definition
        previous = cut
    ids += filler[previous:] + tail
    return torch.tensor(ids, dtype=torch.long)
