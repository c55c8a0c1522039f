"""Fitness of a candidate spec: mean log-perplexity on k documents, with racing and batching.

Fitness = mean over documents of the mean NLL of the scored tokens of each document (a log-perplexity;
lower is better). Documents come from the *validation* split by default (never test): each is BOS + tokens,
cut to the target length and scored in one window ("truncate" mode), every token scored.

Needle-driven fitness (LongRoPE2): a line ``PASS_KEY = 12345`` is planted at a random depth of each document
and the document ends with ``assert PASS_KEY == 12345``; only the answer tokens (the digits) are scored.

Racing: `Evaluator.evaluate` scores candidates document by document and stops scoring a candidate as soon as
a `RacingRule` says it cannot beat the reference individual (the ``racing_rank``-th best parent; with rank =
``parents``, the worst parent, whose fitness is the ``threshold`` to enter the parent set). Two rules:

- exact (``z=None``): drop once ``sum of the NLL scored so far / k >= threshold``. An NLL is never negative,
  so the final fitness can only be higher: a dropped candidate provably could not have beaten the reference.
- predictive (``z`` a number, the search's default 1.5): let ``d_j`` be the candidate's NLL minus the
  reference's on document j (paired: the document-to-document spread cancels). After n of k documents the
  candidate's final fitness minus the threshold is predicted by the mean gap ``mean(d_1..d_n)``; if the ``d_j`` are
  independent with spread ``sigma``, the error of that prediction has standard deviation
  ``sigma * sqrt((k - n) / (n * k))`` (the unscored documents' own spread plus the uncertainty of the
  mean gap). Drop when the prediction minus ``z`` such deviations is still >= 0. ``sigma`` is the pooled
  spread of the parents' paired differences to the reference around their own mean gap, so the rule
  tightens as the parents converge. A candidate that would have beaten the reference is dropped with
  probability at most ``(k - 1) * Phi(-z)`` (a union over the looks) when it sits right at the threshold,
  and far less when it is clearly better; simulated with Gaussian gaps at the threshold: 3.4% for z=1.5
  and 1.0% for z=2 with k=5 (the bounds are 27% and 9%). The benchmark replays the rule on a plain run's
  log and counts the wrong drops it would have made.

Batching: rows of one forward are different candidates on the same document (`longrope.attention.apply` with a
list of specs gives each row its own RoPE table).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass, field

import torch

from longrope.attention.patch import apply, restore
from longrope.errors import LongRopeError
from longrope.loss import DEFAULT_CHUNK, token_nll
from longrope.rope import RopeSpec

NEEDLE_DIGITS = 5


@dataclass
class FitnessData:
    """The documents a fitness is computed on.

    input_ids: [k, T] token ids (BOS first). score_mask: [k, T-1] bool, which next-token predictions count
    (None = all). description: where the documents came from (for logs). needle_mask: [k, T-1] bool, the
    predictions of planted answers (`longrope.data.needles`): the second objective of a two-objective search,
    scored in the same forward as ``score_mask`` (None: one objective).
    """

    input_ids: torch.Tensor
    score_mask: torch.Tensor | None = None
    description: str = ""
    needle_mask: torch.Tensor | None = None
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2 or self.input_ids.shape[0] < 1 or self.input_ids.shape[1] < 2:
            raise LongRopeError(
                f"fitness documents must be a [k >= 1, T >= 2] tensor, got {tuple(self.input_ids.shape)}"
            )
        self.input_ids = self.input_ids.long()
        if self.score_mask is not None:
            if self.score_mask.shape != (self.docs, self.length - 1):
                raise LongRopeError("score mask must be [k, T-1]")
            if not bool(self.score_mask.any(dim=1).all()):
                raise LongRopeError("every fitness document needs at least one scored token")
        if self.needle_mask is not None:
            if self.needle_mask.shape != (self.docs, self.length - 1):
                raise LongRopeError("needle mask must be [k, T-1]")
            if not bool(self.needle_mask.any(dim=1).all()):
                raise LongRopeError("every document of a two-objective fitness needs at least one answer token")
        digest = hashlib.sha256(self.input_ids.numpy().tobytes())
        if self.score_mask is not None:
            digest.update(self.score_mask.numpy().tobytes())
        if self.needle_mask is not None:  # absent: one-objective data keep their fingerprint
            digest.update(b"needle" + self.needle_mask.numpy().tobytes())
        self.fingerprint = digest.hexdigest()[:16]

    @property
    def two_objectives(self) -> bool:
        return self.needle_mask is not None

    @property
    def docs(self) -> int:
        return self.input_ids.shape[0]

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def plant_needle(ids: list[int], tokenizer, rng: random.Random) -> tuple[list[int], list[int]]:
    """Plant a pass key in one document (BOS + tokens): returns (token ids of the same length, scored positions).

    The key line goes at a random depth, after a token that ends a line when one is near; the document ends
    with ``assert PASS_KEY == <key>``; scored positions are the prediction positions of the key's tokens.
    """
    key = str(rng.randint(10 ** (NEEDLE_DIGITS - 1), 10**NEEDLE_DIGITS - 1))
    needle = _encode(tokenizer, f"\nPASS_KEY = {key}\n")
    question = _encode(tokenizer, "\nassert PASS_KEY == ")
    answer = _encode(tokenizer, key)
    length = len(ids)
    body_len = length - len(needle) - len(question) - len(answer)
    if body_len < 8:
        raise LongRopeError(f"documents of {length} tokens are too short for a needle")
    body = ids[:body_len]
    depth = rng.randint(1, body_len - 1)
    for offset in range(64):  # prefer a line boundary just after the chosen depth
        at = depth + offset
        if at >= body_len:
            break
        if "\n" in tokenizer.decode([body[at - 1]]):
            depth = at
            break
    planted = body[:depth] + needle + body[depth:] + question + answer
    start = length - len(answer)
    # NLL position t scores token t+1: the answer tokens at start..length-1 are predicted at start-1..length-2.
    return planted, list(range(start - 1, length - 1))


def build_fitness_data(
    tokenizer,
    length: int,
    docs: int,
    corpus: str = "stdlib",
    split: str = "validation",
    seed: int = 0,
    needle: bool = False,
    needles_per_doc: int = 0,
) -> FitnessData:
    """``docs`` documents of the ``split`` split, each BOS + tokens cut to ``length``; pass keys if ``needle``.

    ``needles_per_doc`` > 0: two-objective data (`longrope.data.needles`): that many needles planted in each
    document at depths covering the whole prompt, ``score_mask`` on the natural text tokens (document
    perplexity) and ``needle_mask`` on the answer tokens (needle-driven perplexity), one forward for both."""
    from longrope.data.corpus import get_corpus
    from longrope.data.samples import token_samples

    if split == "test":
        raise LongRopeError("the search must not look at the test split; use validation (or train)")
    if docs < 1:
        raise LongRopeError(f"the fitness needs at least one document (docs={docs})")
    samples = token_samples(get_corpus(corpus, split), tokenizer, min_tokens=length, n=docs, seed=seed)
    ids = torch.stack(samples)  # [k, T]
    description = f"{docs} docs of {corpus}:{split} cut to {length} tokens (seed {seed})"
    if needles_per_doc:
        if needle:
            raise LongRopeError("needle (pass keys only) and needles_per_doc (two objectives) exclude each other")
        from longrope.data.needles import needle_documents

        planted = needle_documents(ids.tolist(), tokenizer, needles_per_doc, seed)
        text = torch.zeros(docs, length - 1, dtype=torch.bool)
        answers = torch.zeros(docs, length - 1, dtype=torch.bool)
        for j, doc in enumerate(planted):
            # NLL position t scores token t+1: token p is predicted at position p - 1
            text[j, [p - 1 for p in doc.text_positions]] = True
            answers[j, [p - 1 for p in doc.answer_positions]] = True
        return FitnessData(torch.tensor([d.ids for d in planted], dtype=torch.long), text,
                           description + f", {needles_per_doc} needles each (two objectives)", answers)
    if not needle:
        return FitnessData(ids, None, description)
    rng = random.Random(f"needle-{seed}")
    rows, mask = [], torch.zeros(docs, length - 1, dtype=torch.bool)
    for j, sample in enumerate(ids.tolist()):
        planted, scored = plant_needle(sample, tokenizer, rng)
        rows.append(planted)
        mask[j, scored] = True
    return FitnessData(torch.tensor(rows, dtype=torch.long), mask, description + ", needle-driven")


@dataclass
class Evaluation:
    """Result of one candidate: per-document NLL of the documents scored, in order.

    complete: all documents scored and ``fitness`` is the exact fitness; otherwise the candidate was dropped
    by racing and ``fitness`` is the bound that dropped it, and ``estimate`` its predicted fitness (the
    predictive rule only; None for the exact rule, whose bound is no estimate).
    """

    per_doc: list[float]
    fitness: float
    complete: bool
    tokens: int
    seconds: float
    estimate: float | None = None
    penalty: float | None = None  # in-window penalty included in ``fitness`` (portable search only)
    # Two objectives: the needle-driven NLL per document, its fitness (bound when dropped) and estimate.
    needle_per_doc: list[float] | None = None
    needle: float | None = None
    needle_estimate: float | None = None


@dataclass(frozen=True)
class RacingRule:
    """When to stop scoring a candidate (see the module docstring).

    threshold: the fitness to beat. reference: the per-document NLL of the individual whose fitness it is.
    sigma: spread of per-document paired differences. z: confidence in spreads; None = exact rule.
    """

    threshold: float
    reference: tuple[float, ...]
    sigma: float = 0.0
    z: float | None = None

    def bound(self, scored: list[float]) -> float:
        """A lower estimate of the final fitness of a candidate whose first ``len(scored)`` NLLs are ``scored``."""
        k, n = len(self.reference), len(scored)
        if self.z is None:
            return sum(scored) / k  # unscored documents counted as NLL 0: a true lower bound
        return self.estimate(scored) - self.z * self.sigma * math.sqrt((k - n) / (n * k))

    def estimate(self, scored: list[float]) -> float | None:
        """The predicted final fitness (threshold + mean gap so far); None for the exact rule."""
        if self.z is None:
            return None
        return self.threshold + sum(c - r for c, r in zip(scored, self.reference)) / len(scored)

    def drops(self, scored: list[float]) -> bool:
        return len(scored) < len(self.reference) and self.bound(scored) >= self.threshold

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "reference": list(self.reference), "sigma": self.sigma, "z": self.z}

    @classmethod
    def from_json(cls, data: dict) -> RacingRule:
        return cls(float(data["threshold"]), tuple(data["reference"]), float(data["sigma"]), data["z"])


def paired_spread(rows: list[list[float]]) -> float:
    """Pooled spread of each row's per-document differences to the last row, around the row's own mean gap."""
    k = len(rows[-1])
    deviations = []
    for row in rows[:-1]:
        d = [a - b for a, b in zip(row, rows[-1])]
        mean = sum(d) / k
        deviations.extend(x - mean for x in d)
    dof = max(1, len(deviations) - (len(rows) - 1))
    return max(math.sqrt(sum(x * x for x in deviations) / dof) if deviations else 0.0, 1e-4)


def racing_rule(ranked: list[tuple[float, list[float]]], z: float | None, rank: int | None = None) -> RacingRule:
    """The rule racing against the ``rank``-th (default: the last) of ``ranked`` = [(fitness, per-document
    NLL)] of complete individuals, best first. ``sigma`` pools the paired differences of *all* of ``ranked``
    to that reference: racing against the best alone (rank 1) must still learn how documents disagree."""
    rank = len(ranked) if rank is None else rank
    threshold, reference = ranked[rank - 1]
    others = [row for i, (_, row) in enumerate(ranked) if i != rank - 1]
    sigma = 0.0 if z is None else paired_spread([*others, reference])
    return RacingRule(float(threshold), tuple(reference), sigma, z)


def round_nll(value: float) -> float:
    """NLL values are stored rounded to 1e-6 so runs compare exactly across processes and resumes."""
    return round(float(value), 6)


class Evaluator:
    """Scores candidate specs on `FitnessData`, ``batch`` candidates per forward, with racing."""

    def __init__(self, model, data: FitnessData, batch: int = 4, chunk: int = DEFAULT_CHUNK):
        if batch < 1:
            raise LongRopeError(f"batch size must be >= 1, got {batch}")
        self.model = model
        self.data = data
        self.batch = batch
        self.chunk = chunk
        self.forward_tokens = 0
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def _score(self, specs: list[RopeSpec], doc: int) -> list[float] | list[tuple[float, float]]:
        """Mean scored NLL of document ``doc`` under each spec, ``batch`` specs per forward; with two objectives
        (document NLL, needle NLL) per spec, both from the same forward."""
        ids = self.data.input_ids[doc].to(self.device)
        mask = None if self.data.score_mask is None else self.data.score_mask[doc].to(self.device)
        needle = None if self.data.needle_mask is None else self.data.needle_mask[doc].to(self.device)
        out: list = []
        for start in range(0, len(specs), self.batch):
            group = specs[start : start + self.batch]
            apply(self.model, list(group))
            try:
                nll = token_nll(self.model, ids[None].expand(len(group), -1), chunk=self.chunk)  # [rows, T-1]
            finally:
                restore(self.model)
            self.forward_tokens += len(group) * ids.numel()
            values = nll[:, mask] if mask is not None else nll
            means = values.double().mean(dim=1).tolist()
            if needle is None:
                out.extend(means)
            else:
                out.extend(zip(means, nll[:, needle].double().mean(dim=1).tolist()))
        return out

    def _race(self, specs: list[RopeSpec], drops) -> tuple[list[tuple[list[float], ...]], list[int], list[bool], float]:
        """Score ``specs`` document by document; a spec stops being scored once ``drops(*its scores so far)`` says
        so (``drops`` None: never). Returns per spec one list of rounded per-document NLLs per objective, its
        forward tokens and whether it was dropped, and the seconds per spec."""
        objectives = 2 if self.data.two_objectives else 1
        started = time.perf_counter()
        scores = [tuple([] for _ in range(objectives)) for _ in specs]
        tokens = [0] * len(specs)
        dropped = [False] * len(specs)
        active = list(range(len(specs)))
        for j in range(self.data.docs):
            if not active:
                break
            values = self._score([specs[i] for i in active], j)
            still = []
            for i, value in zip(active, values):
                for column, v in zip(scores[i], value if objectives > 1 else (value,)):
                    column.append(round_nll(v))
                tokens[i] += self.data.length
                if drops is not None and drops(*scores[i]):
                    dropped[i] = True
                else:
                    still.append(i)
            active = still
        return scores, tokens, dropped, (time.perf_counter() - started) / max(1, len(specs))

    def evaluate(self, specs: list[RopeSpec], rule: RacingRule | None = None) -> list[Evaluation]:
        """Evaluate ``specs`` on every document, or, with a racing ``rule``, until the rule drops them.

        Two-objective data take a `longrope.search.pareto.ParetoRacingRule` (or None)."""
        if self.data.two_objectives:
            return self._evaluate_two(specs, rule)
        k = self.data.docs
        if rule is not None and len(rule.reference) != k:
            raise LongRopeError(f"racing reference has {len(rule.reference)} documents, the fitness {k}")
        scores, tokens, dropped, seconds = self._race(specs, None if rule is None else rule.drops)
        results = []
        for (per_doc,), used, was_dropped in zip(scores, tokens, dropped):
            if was_dropped:
                estimate = rule.estimate(per_doc)
                results.append(Evaluation(per_doc, round_nll(rule.bound(per_doc)), False, used, seconds,
                                          None if estimate is None else round_nll(estimate)))
            else:
                results.append(Evaluation(per_doc, round_nll(sum(per_doc) / k), True, used, seconds))
        return results

    def _evaluate_two(self, specs: list[RopeSpec], rule) -> list[Evaluation]:
        """`evaluate` on two-objective data: both NLLs per document from one forward; ``rule`` races on both."""
        k = self.data.docs
        if rule is not None and not hasattr(rule, "dominators"):
            raise LongRopeError("a two-objective fitness races with a Pareto rule, not a one-objective one")
        if rule is not None and len(rule.per_doc[0][0]) != k:
            raise LongRopeError(f"racing references have {len(rule.per_doc[0][0])} documents, the fitness {k}")
        scores, tokens, dropped, seconds = self._race(specs, None if rule is None else rule.drops)
        results = []
        for (ppl, needle), used, was_dropped in zip(scores, tokens, dropped):
            if was_dropped:
                bound, estimate = rule.bound(ppl, needle), rule.estimate(ppl, needle)
                results.append(Evaluation(
                    ppl, round_nll(bound[0]), False, used, seconds,
                    None if estimate is None else round_nll(estimate[0]), None, needle, round_nll(bound[1]),
                    None if estimate is None else round_nll(estimate[1])))
            else:
                results.append(Evaluation(ppl, round_nll(sum(ppl) / k), True, used, seconds,
                                          needle_per_doc=needle, needle=round_nll(sum(needle) / k)))
        return results


class PenalizedEvaluator(Evaluator):
    """The fitness of a portable search: long-context fitness plus ``weight * max(0, in-window NLL - base)``.

    A portable spec uses its long factors at every length (`longrope.export.hf.portable_spec`), so inside the
    original window it must not cost much against the model's own RoPE. ``in_window`` holds documents cut to
    that window; ``base`` is their NLL without scaling, measured once. Only complete candidates pay for the
    in-window forward; racing still sees the long-context documents alone, which stays sound: the penalty can
    only raise a fitness.
    """

    def __init__(self, model, data: FitnessData, in_window: FitnessData, weight: float = 1.0, batch: int = 4,
                 chunk: int = DEFAULT_CHUNK):
        super().__init__(model, data, batch, chunk)
        from longrope.rope import NoScaling

        self.inner = Evaluator(model, in_window, batch, chunk)
        self.weight = weight
        self.base = self.inner.evaluate([NoScaling()])[0].fitness

    def evaluate(self, specs: list[RopeSpec], rule: RacingRule | None = None) -> list[Evaluation]:
        results = super().evaluate(specs, rule)
        complete = [i for i, r in enumerate(results) if r.complete]
        before = self.inner.forward_tokens
        inside = self.inner.evaluate([specs[i] for i in complete]) if complete else []
        self.forward_tokens += self.inner.forward_tokens - before
        for i, in_window in zip(complete, inside):
            penalty = round_nll(self.weight * max(0.0, in_window.fitness - self.base))
            result = results[i]
            results[i] = Evaluation(result.per_doc, round_nll(result.fitness + penalty), True,
                                    result.tokens + in_window.tokens, result.seconds + in_window.seconds,
                                    result.estimate, penalty)
        return results
