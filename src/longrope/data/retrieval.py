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
# ``mixed_keys`` adds names quoted as string keys (subscripts, get/set calls, pairs): without them the model
# answered ``SETTINGS["pass_key"] ==`` with a string, the usual right-hand side of a subscript comparison in the
# stdlib (0/40 on the held-out format, measured). Half of its questions are drawn from ``KEY_QUESTIONS``: at one
# in four that prior still won on trained subscript questions (5/10 at step 960 of a build, measured). The dict
# literal ``{"name": value}`` and the container name ``SETTINGS`` stay out of every pairing: the held-out format
# is still never trained.
KEY_DEFINITIONS = (
    'config["{name}"] = {value}\n', "options['{name}'] = {value}\n", 'registry.set("{name}", {value})\n',
    '("{name}", {value}),\n', 'DEFAULTS["{name}"] = {value}\n',
)
KEY_QUESTIONS = (
    'assert config["{name}"] ==', "assert options['{name}'] ==", 'print(registry.get("{name}"))  # prints',
    "value = table['{name}']  # value is", 'assert environ.get("{name}") ==', 'assert DEFAULTS["{name}"] ==',
    "assert CONFIG['{name}'] ==", 'if params["{name}"] ==',
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


# Names the passkey templates ask for; never drawn as a composed name, so the held-out measure also asks for a
# name no training window used.
HELD_OUT_NAMES = frozenset({"pass_key"})
_WORD = re.compile(r"[a-z]{3,8}")


def composed_names(pool: list[str], count: int, seed: int = 0) -> list[str]:
    """``count`` distinct snake_case names joining two lowercase words of ``pool`` (``max_size``, ...).

    The commonest identifiers alone taught lookup of names the model had seen many times: a name never seen
    (``pass_key``) was retrieved 3 times in 10 where ``buffer_size`` was 10 in 10 (measured on the first
    shipped model). Names drawn from a space too large to memorise make the lookup a copy of whatever name is
    asked. Never one of ``HELD_OUT_NAMES``."""
    words = sorted({w for w in pool if _WORD.fullmatch(w)})
    if len(words) < 2:
        raise LongRopeError("composed names need at least two lowercase words in the identifier pool")
    rng = random.Random(f"composed-names-{seed}")
    out: dict[str, None] = {}
    while len(out) < min(count, len(words) * (len(words) - 1) - len(HELD_OUT_NAMES)):
        name = "_".join(rng.sample(words, 2))
        if name not in HELD_OUT_NAMES:
            out[name] = None
    return list(out)


def curriculum_names(texts: Iterable[str], composed: int, seed: int = 0) -> list[str]:
    """The names retrieval windows define and ask for: the commonest identifiers of ``texts``, then
    ``composed`` names built from them (`composed_names`)."""
    names = identifier_pool(texts)
    return names + composed_names(names, composed, seed)


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


PAIRINGS = ("fixed", "mixed", "mixed_keys")
# The curriculum the built-in model is pre-trained with, and the fine-tuning mixture repeats
# (`longrope.train.data.RetrievalMixed`): string keys and subscript questions, plus composed names, are what made
# the held-out dict literal retrievable (notes/tiny_model.md, long runs 3-6).
CURRICULUM_PAIRING = "mixed_keys"
CURRICULUM_COMPOSED_NAMES = 4000


def retrieval_window(stream: torch.Tensor, length: int, tokenizer, names: list[str], rng: random.Random,
                     pairing: str = "fixed", digits: tuple[int, ...] = (5,)) -> torch.Tensor:
    """One training window of exactly ``length`` tokens (see the module docstring). ``pairing``: ``fixed``
    draws one of ``TRAIN_FORMATS``; ``mixed`` pairs any of ``DEFINITIONS`` with any of ``QUESTIONS``;
    ``mixed_keys`` also draws from ``KEY_DEFINITIONS``, and half of its questions from ``KEY_QUESTIONS``.
    ``digits``: the lengths of the values, drawn uniformly from the tuple."""
    if pairing == "mixed":
        fmt = RetrievalFormat("mixed", rng.choice(DEFINITIONS), rng.choice(QUESTIONS))
    elif pairing == "mixed_keys":
        fmt = RetrievalFormat("mixed_keys", rng.choice(DEFINITIONS + KEY_DEFINITIONS),
                              rng.choice(KEY_QUESTIONS if rng.random() < 0.5 else QUESTIONS))
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
