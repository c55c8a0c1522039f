"""Which micro-batches of a LongRoPE2 mixed context-window fine-tune are short, as a pure function of their index.

A long micro-batch holds ``long_rows`` sequences of the training length with the scaled RoPE; a short one holds
``short_rows`` sequences of the short length (documents of at most the original window, packed, attention masked
across documents) with the original RoPE. The setting is ``share``, the share of SHORT TOKENS (LongRoPE2 mixes
roughly 1:9 to 3:7 short to long tokens). The share of micro-batches that must be short to give it is

    p = share * T_long / (share * T_long + (1 - share) * T_short)        (T_*: tokens per micro-batch)

(``p = share`` when both kinds carry the same number of tokens, as `short_rows` arranges). Micro-batch ``m``
(counted over the whole run, ``step * accum + a``) is short exactly when ``floor((m + 1) p) > floor(m p)``
(Bresenham's rule): any ``n`` consecutive micro-batches, in particular the ``accum`` of one optimizer step, hold
``floor(n p)`` or ``ceil(n p)`` short ones, the closest a whole number of micro-batches can come, and the count
before ``m``, ``floor(m p)``, is where the short stream has got to. Nothing depends on state, so a resumed run
(or another process) reads the same micro-batches. ``p`` is exact (a `Fraction`), so no rounding drifts.
"""

from __future__ import annotations

import math
from fractions import Fraction

LONG, SHORT = "long", "short"


def short_rows(batch_size: int, length: int, short_length: int) -> int:
    """Sequences per short micro-batch: as many tokens as a long micro-batch (``batch_size`` x ``length``), so
    the share of short micro-batches is the share of short tokens and every token weighs the same in the
    gradient (each micro-batch's loss is a mean over its own tokens)."""
    return max(1, round(batch_size * length / short_length))


def short_probability(share: float, long_tokens: int, short_tokens: int) -> Fraction:
    """``p``, the share of micro-batches that are short, for a ``share`` of short tokens (module docstring)."""
    s = Fraction(share).limit_denominator(10_000)  # 0.3 is 3/10, not the binary fraction just below it
    return s * long_tokens / (s * long_tokens + (1 - s) * short_tokens)


def micro_kind(p: Fraction, micro: int) -> tuple[str, int]:
    """(``"long"`` or ``"short"``, its index in that kind's stream) of global micro-batch ``micro``."""
    before = math.floor(micro * p)  # short micro-batches before this one
    if math.floor((micro + 1) * p) > before:
        return SHORT, before
    return LONG, micro - before


__all__ = ["LONG", "SHORT", "micro_kind", "short_probability", "short_rows"]
