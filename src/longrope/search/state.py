"""The whole search state in one JSON file, written atomically (temp file + ``os.replace``) after every batch.

It holds the config and its hash (with the model's and the data's fingerprints), every evaluated genome with
its per-document NLL, the parent set, the candidates of the generation under way, the per-generation history,
the length of the JSONL log it agrees with, and the state of the one random generator the search uses
(``random.Random``; numpy and torch generators are not used by the search). A run resumed from it continues
exactly where the last finished batch left off.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from longrope.atomic import atomic_write_bytes
from longrope.errors import LongRopeError

STATE_FORMAT = "longrope-search-state"
STATE_VERSION = 2  # 2: racing rules replaced per-document lower bounds
STATE_FILE = "search_state.json"


def stable_hash(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(model) -> str:
    """Architecture config plus a digest of the first and last parameter tensors (cheap, even for 7B models)."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    params = list(model.parameters())
    digest.update(str(sum(p.numel() for p in params)).encode())
    for p in (params[0], params[-1]) if params else ():
        digest.update(p.detach().float().cpu().numpy().tobytes()[: 1 << 22])
    return digest.hexdigest()[:16]


def rng_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(data: list) -> random.Random:
    rng = random.Random()
    rng.setstate((data[0], tuple(data[1]), data[2]))
    return rng


@dataclass
class Record:
    """One evaluated genome (see `fitness.Evaluation`), with the generation it was first evaluated in."""

    key: str
    per_doc: list[float]
    fitness: float
    complete: bool
    generation: int
    tokens: int
    seconds: float
    order: int  # evaluation order: index in the run
    estimate: float | None = None  # predicted fitness of a candidate dropped by the predictive racing rule
    penalty: float | None = None  # in-window penalty included in fitness (portable search only)
    # Two-objective search (`pareto`): the needle NLL per document, its fitness (a bound when dropped), estimate.
    needle_per_doc: list[float] | None = None
    needle: float | None = None
    needle_estimate: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()
                if not (k.startswith("needle") and v is None)}  # one-objective states as they were

    def point(self, estimated: bool = False) -> tuple[float, float] | None:
        """(document NLL, needle NLL): complete, or with ``estimated`` a dropped record's prediction; else None."""
        if self.needle is None:
            return None
        if self.complete:
            return self.fitness, self.needle
        if estimated and self.estimate is not None and self.needle_estimate is not None:
            return self.estimate, self.needle_estimate
        return None


@dataclass
class SearchState:
    """Everything needed to continue a search.

    generation: the generation under way (0 = the initial population). stage: index of the candidate group
    under way in that generation (the initial population is raced in several groups). pending: its candidates
    (genome keys). group_ready: the group's racing rule is fixed; racing: that rule (`fitness.RacingRule` as
    JSON, None = no racing) and threshold: its threshold (for the log), fixed when the group started.
    parents: genome keys of the parent set, best first. done: the search has finished. baselines: with two
    objectives, {name: [document NLL, needle NLL]} of the baseline methods on the same documents (evaluated
    once, after the last generation; their forward tokens are ``baseline_tokens``, not ``forward_tokens``).
    """

    config_hash: str
    config: dict
    rng: list
    generation: int = 0
    stage: int = 0
    pending: list[str] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    group_ready: bool = False
    threshold: float | None = None
    racing: dict | None = None
    parents: list[str] = field(default_factory=list)
    records: dict[str, Record] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    seeds: dict[str, str] = field(default_factory=dict)
    log_bytes: int = 0
    forward_tokens: int = 0
    seconds: float = 0.0
    done: bool = False
    baselines: dict[str, list[float]] | None = None
    baseline_tokens: int = 0

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "records"}
        out["records"] = {k: r.to_json() for k, r in self.records.items()}
        out["format"] = STATE_FORMAT
        out["version"] = STATE_VERSION
        return out

    @classmethod
    def from_json(cls, data: dict) -> SearchState:
        data = dict(data)
        data.pop("format", None)
        data.pop("version", None)
        records = {k: Record(**r) for k, r in data.pop("records").items()}
        state = cls(**data)
        state.records = records
        return state


def save_state(state: SearchState, path: Path) -> None:
    """Write the state next to ``path`` and move it into place (a killed process never leaves half a file)."""
    atomic_write_bytes(path, json.dumps(state.to_json()).encode(), fsync=True)


def load_state(path: Path, config_hash: str) -> SearchState:
    """Read a state file for a search whose hash is ``config_hash``; a clear error if corrupt or foreign."""
    # An OSError (permission, disk) is the machine's failure, not a corrupt file: it goes up as it is.
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise LongRopeError(
            f"search state {path} is corrupt ({exc}); delete it to start over, or choose another output directory"
        ) from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise LongRopeError(f"{path} is not a longrope search state file")
    if data.get("version") != STATE_VERSION:
        raise LongRopeError(
            f"search state {path} has version {data.get('version')}, expected {STATE_VERSION}"
        )
    if data.get("config_hash") != config_hash:
        raise LongRopeError(
            f"search state {path} belongs to a different search (model, data or config differ: state hash "
            f"{data.get('config_hash')}, this run {config_hash}); use another output directory or delete it"
        )
    try:
        return SearchState.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise LongRopeError(f"search state {path} is corrupt ({exc}); delete it to start over") from None
