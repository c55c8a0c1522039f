"""Needle-driven perplexity data (LongRoPE2, arXiv 2502.20082): needles planted in long natural documents.

A document of ``T`` tokens (BOS + natural text, e.g. a stdlib source file cut to the target length) becomes

    BOS, text ... needle ... text ... needle ... text, question 1 answer 1, question 2 answer 2, ...

of the same ``T`` tokens (the text is cut shorter to make room). A needle defines a value under a name in one of
`NEEDLE_FORMATS` (LongRoPE2's "One of the special magic numbers for X is: N" and the code formats of
`longrope.data.retrieval.TRAIN_FORMATS`); the questions at the end ask for every needle of the document in a
shuffled order, each followed by its answer (``" " + value``). What is scored:

- ``answer_positions``: the answer tokens and nothing else (the needle-driven perplexity: how well the model reads
  a value back across the prompt);
- ``text_positions``: the natural text tokens (not BOS, needles, questions or answers): the document perplexity,
  from the same forward.

Depths (where a needle goes, as a fraction of the text before the questions) are stratified over every needle of
a data set so that they cover the whole prompt *including both ends*: the first stratum is ``[0, END_SHARE]``
(right after BOS), the last ``[1 - END_SHARE, 1]`` (right before the questions), the middle ones split the rest
evenly; each needle's depth is drawn uniformly inside its stratum and the strata are dealt to the documents in a
random order. The held-out retrieval format (`longrope.data.retrieval.HELD_OUT_FORMAT`) and the passkey
templates' names never appear, so the final passkey evaluation still asks something the search never saw.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from longrope.data.retrieval import TRAIN_FORMATS, RetrievalFormat
from longrope.errors import LongRopeError

MAGIC_NUMBER = RetrievalFormat(
    "magic_number",
    "One of the special magic numbers for {name} is: {value}.\n",
    "What is the special magic number for {name} mentioned in the provided text? The special magic number for "
    "{name} mentioned in the provided text is",
)
NEEDLE_FORMATS: tuple[RetrievalFormat, ...] = (MAGIC_NUMBER, *TRAIN_FORMATS)
# Names of the needles (a document's needles have distinct names); none is a passkey template's (PASS_KEY,
# pass_key) or the held-out dict's (SETTINGS).
NEEDLE_NAMES: tuple[str, ...] = (
    "SECRET_KEY", "MAGIC_NUMBER", "API_TOKEN", "RANDOM_SEED", "PORT_NUMBER", "USER_ID", "PIN_CODE", "BUILD_ID",
    "SESSION_ID", "ORDER_CODE", "ROOM_NUMBER", "TICKET_ID", "ACCOUNT_NO", "BATCH_ID", "LOCKER_CODE", "FLIGHT_NO",
)
END_SHARE = 0.05  # the first and last depth strata: 0-5% and 95-100% of the text
DIGITS = 5


@dataclass(frozen=True)
class PlantedNeedle:
    """One needle: its name, value and format, its depth (fraction of the text before it, 0..1), where its
    definition starts (token index in the document) and the token indices of its answer."""

    name: str
    value: str
    format: str
    depth: float
    position: int
    answer_positions: tuple[int, ...]


@dataclass(frozen=True)
class NeedleDocument:
    """A document with needles planted: ``ids`` [T] token ids; ``text_positions``: indices of its natural text
    tokens (index 0, never predicted, excluded); ``answer_positions``: indices of every answer token."""

    ids: tuple[int, ...]
    text_positions: tuple[int, ...]
    answer_positions: tuple[int, ...]
    needles: tuple[PlantedNeedle, ...]


def needle_depths(count: int, rng: random.Random, end_share: float = END_SHARE) -> list[float]:
    """``count`` depths, one per stratum (see the module docstring), in stratum order: with two or more, the first
    lies in ``[0, end_share]`` and the last in ``[1 - end_share, 1]``; one needle draws from ``[0, 1]``."""
    if count < 1:
        raise LongRopeError(f"the number of needles must be >= 1, got {count}")
    if count == 1:
        edges = [(0.0, 1.0)]
    else:
        inner = count - 2
        width = (1 - 2 * end_share) / inner if inner else 0.0
        edges = ([(0.0, end_share)] + [(end_share + k * width, end_share + (k + 1) * width) for k in range(inner)]
                 + [(1 - end_share, 1.0)])
    return [rng.uniform(lo, hi) for lo, hi in edges]


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def plant_needles(ids: Sequence[int], tokenizer, depths: Sequence[float], rng: random.Random,
                  formats: Sequence[RetrievalFormat] = NEEDLE_FORMATS,
                  names: Sequence[str] = NEEDLE_NAMES) -> NeedleDocument:
    """Plant one needle per depth of ``depths`` into ``ids`` (first token kept: BOS), questions at the end.

    Names are distinct within the document, values distinct 5-digit numbers, formats drawn from ``formats``;
    the result has exactly ``len(ids)`` tokens."""
    ids = list(ids)
    count = len(depths)
    if not 1 <= count <= len(names):
        raise LongRopeError(f"a document takes 1..{len(names)} needles, got {count}")
    chosen = rng.sample(list(names), count)
    values: list[str] = []
    while len(values) < count:
        value = str(rng.randrange(10 ** (DIGITS - 1), 10**DIGITS))
        if value not in values:
            values.append(value)
    styles = [rng.choice(list(formats)) for _ in range(count)]
    definitions = [_encode(tokenizer, "\n" + f.define(n, v)) for f, n, v in zip(styles, chosen, values)]
    questions = [_encode(tokenizer, "\n" + f.ask(n)) for f, n in zip(styles, chosen)]
    answers = [_encode(tokenizer, " " + v) for v in values]
    order = list(range(count))
    rng.shuffle(order)  # questions in a random order, not the needles' order
    planted = sum(map(len, definitions)) + sum(map(len, questions)) + sum(map(len, answers))
    body_len = len(ids) - 1 - planted
    if body_len < 8 * count:
        raise LongRopeError(f"documents of {len(ids)} tokens are too short for {count} needles: their definitions, "
                            f"questions and answers take {planted} tokens here and leave {max(body_len, 0)} of text "
                            f"(at least {8 * count} needed); plant fewer needles per document (needles_per_doc, "
                            "--needles-per-doc) or use longer documents")
    body = ids[1 : 1 + body_len]
    offsets = [min(body_len, round(d * body_len)) for d in depths]
    out, text_positions = [ids[0]], []
    placed: dict[int, int] = {}
    previous = 0
    for k in sorted(range(count), key=lambda k: (offsets[k], k)):
        text_positions.extend(range(len(out), len(out) + offsets[k] - previous))
        out += body[previous : offsets[k]]
        previous = offsets[k]
        placed[k] = len(out)
        out += definitions[k]
    text_positions.extend(range(len(out), len(out) + body_len - previous))
    out += body[previous:]
    answer_of: dict[int, tuple[int, ...]] = {}
    for k in order:
        out += questions[k]
        answer_of[k] = tuple(range(len(out), len(out) + len(answers[k])))
        out += answers[k]
    if len(out) != len(ids):  # the arithmetic above, checked
        raise AssertionError(f"planted document has {len(out)} tokens, expected {len(ids)}")
    needles = tuple(
        PlantedNeedle(chosen[k], values[k], styles[k].name, offsets[k] / body_len, placed[k], answer_of[k])
        for k in range(count)
    )
    answer_positions = tuple(p for k in order for p in answer_of[k])
    return NeedleDocument(tuple(out), tuple(text_positions), answer_positions, needles)


def needle_documents(samples: Sequence[Sequence[int]], tokenizer, per_doc: int, seed: int = 0,
                     formats: Sequence[RetrievalFormat] = NEEDLE_FORMATS) -> list[NeedleDocument]:
    """``per_doc`` needles planted in each of ``samples`` (token id lists of one length, BOS first), their depths
    stratified over all ``len(samples) * per_doc`` needles (`needle_depths`) and dealt out at random."""
    if per_doc < 1:
        raise LongRopeError(f"needles per document must be >= 1, got {per_doc}")
    rng = random.Random(f"needles-{seed}")
    depths = needle_depths(len(samples) * per_doc, rng)
    rng.shuffle(depths)
    return [plant_needles(sample, tokenizer, depths[j * per_doc : (j + 1) * per_doc], rng, formats)
            for j, sample in enumerate(samples)]
