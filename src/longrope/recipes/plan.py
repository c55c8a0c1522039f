"""The progressive recipe as a TOML plan: which model, which corpus, and an ordered list of stages.

A plan file::

    [model]
    name = "tiny"                  # anything longrope.models.loading.load_model accepts
    dtype = "float32"              # weights dtype while fine-tuning (searches cast to the dtype measured fastest)

    [data]
    corpus = "stdlib"              # longrope.data.corpus.get_corpus

    [[stages]]
    kind = "search"                # LongRoPE evolutionary search of long factors
    factor = 4                     # s: target length = factor x original window (or give `length`)
    # any other key is a SearchConfig field (population, generations, samples, ...)

    [[stages]]
    kind = "finetune"              # fine-tune with the latest searched spec
    length = 1024                  # required
    steps = 150                    # required; other keys: FinetuneConfig fields (lr, schedule, mixed, ...)
    # pose = true                  # PoSE: `length` is then the short window, target_length = 4096 its target
    # mixed = true                 # LongRoPE2 mixed context windows: packed short documents at the original
    # mixed_short_share = 0.3      #   RoPE beside the long ones, this share of the tokens short

    [[stages]]
    kind = "search"                # second search, on the fine-tuned model; factor must grow
    factor = 16

    [[stages]]
    kind = "search_short"          # short factors for sequences within the original window (at that window)

    [[stages]]
    kind = "export"                # HF directory with rope_parameters of type longrope (+ keys for export_hf)

`load_plan` parses and validates the structure (fields, kinds, order) without loading any model; every
mistake is a `LongRopeError` that names the offending field, e.g. ``stages[2].factor``. The types of every
table are checked here, where the file is read (`longrope.schema`; a stage's keys are the fields of the config
class that runs it, so each is declared once): ``racing = "false"`` or ``weight_decay = nan`` never reaches a run.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from longrope.errors import LongRopeError
from longrope.schema import check_table, describe, field_types, read_document
from longrope.train.config import FinetuneConfig

KINDS = ("search", "finetune", "search_short", "export", "evaluate")
STAGE_DIR_NAMES = {"search": "search", "finetune": "finetune", "search_short": "search-short",
                   "export": "export", "evaluate": "evaluate"}
# The tables of a plan and their keys' types; a stage's keys are in `stage_schema`.
PLAN_KEYS: dict[str, Any] = {"model": dict, "data": dict, "stages": list, "seed": int, "description": str}
MODEL_KEYS: dict[str, Any] = {"name": str, "dtype": str}
DATA_KEYS: dict[str, Any] = {"corpus": str}
# The keys of the stages that have no config class (the export and evaluate runners read them).
EXPORT_KEYS: dict[str, Any] = {"target_window": int | None, "lossy": bool, "gguf": bool}
EVALUATE_KEYS: dict[str, Any] = {"lengths": list[int], "docs": int, "passkey_trials": int}


def stage_schema(kind: str) -> dict[str, Any]:
    """The keys a stage of ``kind`` takes and their types: a search's are `SearchConfig`'s fields (``length``
    for ``target_length``), a fine-tune's `FinetuneConfig`'s (plus its own ``spec`` file)."""
    if kind in ("search", "search_short"):
        from longrope.search.evolution import SearchConfig

        return {**field_types(SearchConfig, exclude=("target_length",)), "length": int}
    if kind == "finetune":
        return {**field_types(FinetuneConfig), "spec": str}
    return dict(EXPORT_KEYS if kind == "export" else EVALUATE_KEYS)


@dataclass(frozen=True)
class Stage:
    """One step of a plan: its position, kind and settings (the TOML table minus ``kind``)."""

    index: int
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Its directory name under the output directory, e.g. ``03-search``."""
        return f"{self.index + 1:02d}-{STAGE_DIR_NAMES[self.kind]}"

    @property
    def label(self) -> str:
        return f"stages[{self.index}] ({self.kind})"

    def field_name(self, key: str) -> str:
        return f"stages[{self.index}].{key}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.settings}


@dataclass(frozen=True)
class Plan:
    """A validated plan: the model, dtype, corpus and stages, and where it was read from."""

    model: str
    stages: tuple[Stage, ...]
    dtype: str = "float32"
    corpus: str = "stdlib"
    seed: int = 0
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def stage_fingerprint(self, stage: Stage) -> str:
        """What a finished stage must match to be reused: the model, corpus, and this and all earlier stages."""
        earlier = [s.to_dict() for s in self.stages[: stage.index + 1]]
        return json.dumps({"model": self.model, "dtype": self.dtype, "corpus": self.corpus, "seed": self.seed,
                           "stages": earlier}, sort_keys=True, default=str)


def default_plan_path() -> Path:
    """The shipped plan for the built-in tiny model (``longrope/plans/tiny.toml``)."""
    return Path(str(resources.files("longrope") / "plans" / "tiny.toml"))


def _number(stage: Stage, key: str, positive: bool = True) -> float:
    value = stage.settings.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise LongRopeError(f"{stage.field_name(key)} must be a finite number, got {value!r}")  # TOML has inf, nan
    if positive and not value > 0:
        raise LongRopeError(f"{stage.field_name(key)} must be > 0, got {value!r}")
    return float(value)


def _integer(stage: Stage, key: str, minimum: int = 1) -> int:
    value = stage.settings.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise LongRopeError(f"{stage.field_name(key)} must be an integer >= {minimum}, got {value!r}")
    return value


def _require(stage: Stage, key: str, why: str) -> None:
    if key not in stage.settings:
        raise LongRopeError(f"{stage.label}: missing field {stage.field_name(key)} ({why})")


def _search_target(stage: Stage, window: int | None) -> tuple[float, str, str]:
    """(how far a search stage extends, in which unit, how the plan says it). ``factor`` is the scale s;
    ``length`` is L' tokens, the scale L'/L once the model's window L is known, else compared in tokens."""
    if "factor" in stage.settings:
        factor = float(stage.settings["factor"])
        return factor, "scale", f"{stage.field_name('factor')} = {factor:g}"
    length = int(stage.settings["length"])
    if window:
        return length / window, "scale", f"{stage.field_name('length')} = {length} ({length / window:g}x the " \
                                         f"window {window})"
    return float(length), "tokens", f"{stage.field_name('length')} = {length}"


def check_search_order(plan: Plan, window: int | None = None) -> None:
    """Each search extends further than the one before, whether a stage gives ``factor`` or ``length``.

    Without the model's original window (a plan read before any model) the searches that give the same form
    are compared; with it (``window``, at the start of a run) every search is, as the scale s = L'/L.
    """
    last: dict[str, tuple[float, str]] = {}  # unit -> (extent, how the plan says it) of the latest search
    for stage in plan.stages:
        if stage.kind != "search":
            continue
        extent, unit, said = _search_target(stage, window)
        if unit in last and extent <= last[unit][0]:
            raise LongRopeError(f"{said} must be larger than {last[unit][1]}: a later search extends further than "
                                "the one before")
        last[unit] = (extent, said)


def _check_search(stage: Stage) -> None:
    has_factor, has_length = "factor" in stage.settings, "length" in stage.settings
    if not has_factor and not has_length:
        raise LongRopeError(
            f"{stage.label}: missing field {stage.field_name('factor')} (the extension scale s; or give "
            f"{stage.field_name('length')} in tokens)"
        )
    if has_factor and has_length:
        raise LongRopeError(
            f"{stage.label}: give {stage.field_name('factor')} or {stage.field_name('length')}, not both")
    if has_factor and _number(stage, "factor") <= 1:
        raise LongRopeError(f"{stage.field_name('factor')} must be > 1 (an extension), got {stage.settings['factor']}")
    if has_length:
        _integer(stage, "length", 2)


def search_config(stage: Stage, plan: Plan, extra: dict[str, Any] | None = None):
    """The `SearchConfig` of a search or search_short stage: the plan's corpus and seed, then ``extra``, then the
    stage's own fields (``length`` is the config's ``target_length``)."""
    import dataclasses

    from longrope.search.evolution import SearchConfig

    settings = dict(stage.settings)
    if "length" in settings:
        settings["target_length"] = settings.pop("length")
    valid = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(settings) - valid)
    if unknown:
        raise LongRopeError(
            f"{stage.label}: unknown field(s) {', '.join(stage.field_name(k) for k in unknown)}; a search stage "
            f"takes factor or length and SearchConfig fields: {', '.join(sorted(valid - {'target_length'}))}"
        )
    values = {"corpus": plan.corpus, "seed": plan.seed, **(extra or {}), **settings}
    return SearchConfig(**values)


def _check_search_settings(stage: Stage, plan: Plan) -> None:
    # A short-factor search takes its scale from the long spec at run time; any valid one stands in for it here.
    config = search_config(stage, plan, {"factor": 2.0} if stage.kind == "search_short" else None)
    try:
        config.validate()
    except LongRopeError as exc:
        raise LongRopeError(f"{stage.label}: {_with_field(stage, str(exc))}") from None


def _with_field(stage: Stage, message: str) -> str:
    """``message`` with its leading setting name spelled as the plan field (``population`` ->
    ``stages[2].population``), so the user finds the line to fix."""
    name = message.split(" ", 1)[0]
    return stage.field_name(name) + message[len(name):] if name in stage.settings else message


def _check_finetune(stage: Stage) -> None:
    _require(stage, "length", "tokens per training sequence")
    _require(stage, "steps", "optimizer steps")
    settings = {k: v for k, v in stage.settings.items() if k != "spec"}
    try:
        FinetuneConfig.from_dict(settings)
    except LongRopeError as exc:
        raise LongRopeError(f"{stage.label}: {exc}") from None
    except TypeError as exc:
        raise LongRopeError(f"{stage.label}: {exc}") from None


def validate(plan: Plan) -> Plan:
    """Check the order of the stages; raise `LongRopeError` naming the field that makes the plan unworkable.

    Rules: a fine-tune needs a spec (an earlier search, or its own ``spec`` file); each search's scale must
    exceed the previous search's; ``search_short`` needs an earlier search (its long factors); ``export`` and
    ``evaluate`` need a spec; only ``evaluate`` may follow ``export``.
    """
    if not plan.stages:
        raise LongRopeError("plan has no stages: add [[stages]] tables (kind = search, finetune, ...)")
    have_spec = False
    have_long_search = False
    for stage in plan.stages:
        exported = [s.index for s in plan.stages[: stage.index] if s.kind == "export"]
        if exported and stage.kind != "evaluate":
            raise LongRopeError(
                f"{stage.label}: only evaluate stages can follow the export stage stages[{exported[0]}]")
        if stage.kind == "search":
            _check_search(stage)
            _check_search_settings(stage, plan)
            have_spec = have_long_search = True
        elif stage.kind == "finetune":
            if "spec" in stage.settings:
                have_spec = True
            elif not have_spec:
                raise LongRopeError(
                    f"{stage.label}: no scaling spec to fine-tune with; put a search stage before it or set "
                    f"{stage.field_name('spec')} to a spec JSON file"
                )
            _check_finetune(stage)
        elif stage.kind == "search_short":
            if not have_long_search:
                raise LongRopeError(
                    f"{stage.label}: a short-factor search needs the long factors of an earlier search stage; "
                    f"move it after a kind = \"search\" stage"
                )
            if "length" in stage.settings or "factor" in stage.settings:
                key = "length" if "length" in stage.settings else "factor"
                raise LongRopeError(
                    f"{stage.field_name(key)}: a short-factor search always runs at the model's original window "
                    "with the scale of the long factors; remove it"
                )
            _check_search_settings(stage, plan)
        elif stage.kind in ("export", "evaluate"):
            if not have_spec:
                raise LongRopeError(f"{stage.label}: nothing to {stage.kind} yet; it needs an earlier search stage")
            if stage.kind == "evaluate":
                lengths = stage.settings.get("lengths")
                if lengths is not None and not (
                    isinstance(lengths, list) and lengths and all(isinstance(n, int) and n > 1 for n in lengths)
                ):
                    raise LongRopeError(f"{stage.field_name('lengths')} must be a list of token counts")
    if sum(s.kind == "export" for s in plan.stages) > 1:
        raise LongRopeError("plan has more than one export stage")
    check_search_order(plan)
    return plan


def parse_plan(data: dict[str, Any], source: str | None = None) -> Plan:
    """Build and validate a `Plan` from the parsed TOML tables."""
    if not isinstance(data, dict):
        raise LongRopeError("a plan must be a TOML document")
    check_table(data, PLAN_KEYS, noun="top-level field", what="a TOML document")
    model = data.get("model")
    if model is None:
        raise LongRopeError("plan: missing table [model] (with name = \"tiny\" or a model path)")
    check_table(model, MODEL_KEYS, prefix="model.", noun="field")
    if not model.get("name"):
        raise LongRopeError("plan: missing field model.name (\"tiny\", a model directory, .gguf file or hub id)")
    data_table = check_table(data.get("data", {}), DATA_KEYS, prefix="data.", noun="field")
    raw_stages = data.get("stages")
    if raw_stages is None:
        raise LongRopeError("plan: missing [[stages]] (an ordered list of search / finetune / export stages)")
    stages = []
    for index, table in enumerate(raw_stages):
        if not isinstance(table, dict):
            raise LongRopeError(f"plan: stages[{index}] must be a table, found {describe(table)}")
        if "kind" not in table:
            raise LongRopeError(f"plan: missing field stages[{index}].kind (one of {', '.join(KINDS)})")
        kind = table["kind"]
        if not isinstance(kind, str) or kind not in KINDS:
            raise LongRopeError(f"plan: stages[{index}].kind = {kind!r} is not one of {', '.join(KINDS)}")
        settings = copy.deepcopy({k: v for k, v in table.items() if k != "kind"})
        stage = Stage(index, kind, settings)
        check_table(settings, stage_schema(kind), prefix=f"stages[{index}].", where=stage.label)
        stages.append(stage)
    seed = data.get("seed", 0)
    plan = Plan(model=model["name"], dtype=model.get("dtype", "float32"), corpus=data_table.get("corpus", "stdlib"),
                stages=tuple(stages), seed=seed, source=source, raw=data)
    return validate(plan)


def load_plan(path: str | Path | None = None) -> Plan:
    """Read and validate a TOML plan (default: the shipped tiny plan)."""
    path = Path(path) if path is not None else default_plan_path()
    data = read_document(path, "plan file", "toml")
    try:
        return parse_plan(data, source=str(path))
    except LongRopeError as exc:
        raise LongRopeError(f"{path}: {exc}") from None
