"""Fitness of a candidate spec: mean log-perplexity on k documents, with racing and batching.

Fitness = mean over documents of the mean NLL of the scored tokens of each document (a log-perplexity;
lower is better). Documents come from the *validation* split by default (never test): each is BOS + tokens,
cut to the target length and scored in one window ("truncate" mode), every token scored.

Needle-driven fitness (LongRoPE2): a line ``PASS_KEY = 12345`` is planted at a random depth of each document
and the document ends with ``assert PASS_KEY == 12345``; only the answer tokens (the digits) are scored.

Racing: `Evaluator.evaluate` scores candidates document by document and drops a candidate as soon as

    (sum of its NLL on the documents scored so far + sum of lower bounds b_j on the others) / k >= threshold

where ``threshold`` is the fitness a candidate must beat to enter the parent set (see `evolution`). With
``b_j = 0`` (a NLL is never negative) the rule is exact: a dropped candidate provably could not have entered.
The default is a statistical rule (`racing_bounds`): ``b_j = r_j - z * sigma``, where ``r`` is the per-document
NLL of the threshold individual (the worst parent, so ``threshold = mean(r)``) and ``sigma`` is the pooled
spread of the parents' per-document differences to it around their own mean difference. The rule then reads
"drop once the child is worse than the worst parent by more than ``z * sigma`` on each unscored document's
behalf": it is wrong only if the unscored documents favour the child by more than ``z`` spreads on average.
The spread scales with how alike the parents are, so the rule tightens as the search converges. The
benchmark replays the rule on a plain run's log and counts the children it would have wrongly dropped.

Batching: rows of one forward are different candidates on the same document (`longrope.patch.apply` with a
list of specs gives each row its own RoPE table).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass, field

import torch

from longrope.errors import LongRopeError
from longrope.eval.loss import DEFAULT_CHUNK, token_nll
from longrope.patch import apply, restore
from longrope.rope import RopeSpec

NEEDLE_DIGITS = 5


@dataclass
class FitnessData:
    """The documents a fitness is computed on.

    input_ids: [k, T] token ids (BOS first). score_mask: [k, T-1] bool, which next-token predictions count
    (None = all). description: where the documents came from (for logs).
    """

    input_ids: torch.Tensor
    score_mask: torch.Tensor | None = None
    description: str = ""
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
        digest = hashlib.sha256(self.input_ids.numpy().tobytes())
        if self.score_mask is not None:
            digest.update(self.score_mask.numpy().tobytes())
        self.fingerprint = digest.hexdigest()[:16]

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
) -> FitnessData:
    """``docs`` documents of the ``split`` split, each BOS + tokens cut to ``length``; pass keys if ``needle``."""
    from longrope.data.corpus import get_corpus
    from longrope.data.samples import token_samples

    if split == "test":
        raise LongRopeError("the search must not look at the test split; use validation (or train)")
    if docs < 1:
        raise LongRopeError(f"the fitness needs at least one document (docs={docs})")
    samples = token_samples(get_corpus(corpus, split), tokenizer, min_tokens=length, n=docs, seed=seed)
    ids = torch.stack(samples)  # [k, T]
    description = f"{docs} docs of {corpus}:{split} cut to {length} tokens (seed {seed})"
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
    by racing and ``fitness`` is the lower bound that dropped it.
    """

    per_doc: list[float]
    fitness: float
    complete: bool
    tokens: int
    seconds: float


def racing_bounds(parents: list[list[float]], z: float | None) -> list[float]:
    """Per-document lower bounds for racing from the parents' per-document NLL [P][k], best parent first.

    ``z=None``: all zeros (exact racing). Otherwise ``r_j - z * sigma`` with ``r`` the worst parent (see the
    module docstring); never below 0.
    """
    k = len(parents[0])
    if z is None:
        return [0.0] * k
    reference = parents[-1]
    deviations = []
    for row in parents[:-1]:
        d = [a - b for a, b in zip(row, reference)]
        mean = sum(d) / k
        deviations.extend(x - mean for x in d)
    dof = max(1, len(deviations) - (len(parents) - 1))
    sigma = max(math.sqrt(sum(x * x for x in deviations) / dof) if deviations else 0.0, 1e-4)
    return [max(0.0, r - z * sigma) for r in reference]


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
    def _score(self, specs: list[RopeSpec], doc: int) -> list[float]:
        """Mean scored NLL of document ``doc`` under each spec, ``batch`` specs per forward."""
        ids = self.data.input_ids[doc].to(self.device)
        mask = None if self.data.score_mask is None else self.data.score_mask[doc].to(self.device)
        out: list[float] = []
        for start in range(0, len(specs), self.batch):
            group = specs[start : start + self.batch]
            apply(self.model, list(group))
            try:
                nll = token_nll(self.model, ids[None].expand(len(group), -1), chunk=self.chunk)  # [rows, T-1]
            finally:
                restore(self.model)
            self.forward_tokens += len(group) * ids.numel()
            values = nll[:, mask] if mask is not None else nll
            out.extend(values.double().mean(dim=1).tolist())
        return out

    def evaluate(
        self,
        specs: list[RopeSpec],
        threshold: float = math.inf,
        lower_bounds: list[float] | None = None,
    ) -> list[Evaluation]:
        """Evaluate ``specs``; with a finite ``threshold``, drop candidates that cannot get below it.

        ``lower_bounds[j]`` is a lower bound of any candidate's NLL on document j (0 when None: exact racing).
        """
        k = self.data.docs
        bounds = [0.0] * k if lower_bounds is None else [max(0.0, float(b)) for b in lower_bounds]
        started = time.perf_counter()
        per_doc: list[list[float]] = [[] for _ in specs]
        tokens = [0] * len(specs)
        dropped = [False] * len(specs)
        bound_of = [math.inf] * len(specs)
        active = list(range(len(specs)))
        for j in range(k):
            if not active:
                break
            values = self._score([specs[i] for i in active], j)
            still = []
            for i, value in zip(active, values):
                per_doc[i].append(round_nll(value))
                tokens[i] += self.data.length
                bound = (sum(per_doc[i]) + sum(bounds[j + 1 :])) / k
                if j < k - 1 and bound >= threshold:
                    dropped[i] = True
                    bound_of[i] = bound
                else:
                    still.append(i)
            active = still
        seconds = (time.perf_counter() - started) / max(1, len(specs))
        results = []
        for i in range(len(specs)):
            if dropped[i]:
                results.append(Evaluation(per_doc[i], round_nll(bound_of[i]), False, tokens[i], seconds))
            else:
                results.append(
                    Evaluation(per_doc[i], round_nll(sum(per_doc[i]) / k), True, tokens[i], seconds)
                )
        return results
