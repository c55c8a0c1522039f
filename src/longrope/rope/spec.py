"""Scaling specs: one frozen, validated dataclass per method, serialisable to JSON and to ``rope_parameters``.

A spec says *what* scaling to use; `longrope.rope.frequencies` turns a spec plus a model's `RopeGeometry` into
inverse frequencies, and `longrope.attention.patch` puts them into a live model.

One file over 400 lines on purpose: the spec classes are small and belong side by side, so their fields,
checks and JSON forms can be compared at a glance.

Types are checked where specs come in: `make_spec` and `spec_from_dict` (so `load_spec` and presets) hold every
parameter to its field's declared type with `longrope.schema` (no ``"true"`` for a boolean, no ``true`` or NaN for
a number, no string for a list); each class's ``__post_init__`` checks the ranges.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from longrope.errors import LongRopeError
from longrope.rope.preset_files import is_preset_name, preset_names, read_preset
from longrope.schema import check_table, describe, field_types, problem, read_document, suggest


def _check_factor(method: str, factor: float) -> None:
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not math.isfinite(factor):
        raise LongRopeError(f"{method}: factor must be a finite number, got {factor!r}")
    if factor < 1:
        raise LongRopeError(f"{method}: factor (target window / original window) must be >= 1, got {factor}")


def _check_window(method: str, window: int | None) -> None:
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise LongRopeError(f"{method}: original_window must be a positive integer, got {window!r}")


def _check_factor_list(name: str, values) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or any(isinstance(v, (bool, str, bytes)) for v in values):
        raise LongRopeError(f"longrope: {name} must be a list of numbers, got {describe(values)}")
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise LongRopeError(f"longrope: {name} must be a list of numbers ({exc})") from None
    if not values:
        raise LongRopeError(f"longrope: {name} is empty")
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise LongRopeError(f"longrope: {name}[{i}] is {v}; rescale factors must be finite")
        if v <= 0:
            raise LongRopeError(f"longrope: {name}[{i}] is {v}; rescale factors must be > 0")
    return values


@dataclass(frozen=True)
class RopeSpec:
    """Base of all specs. ``original_window`` (L) defaults to the model's own when None."""

    method: ClassVar[str] = ""
    # Whether the frequencies depend on the sequence length (dynamic NTK; LongRoPE's short/long switch), so a
    # rotary module must rebuild its tables per length instead of once.
    length_dependent: ClassVar[bool] = False
    original_window: int | None = None

    def __post_init__(self) -> None:
        _check_window(self.method, self.original_window)

    # -- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, RopeSpec):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def with_window(self, original_window: int) -> RopeSpec:
        """The same spec with the original window filled in (a no-op when it is already set)."""
        if self.original_window is not None:
            return self
        return dataclasses.replace(self, original_window=original_window)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.to_dict().items() if k != "method" and v is not None]
        short = [p if len(p) < 40 else p[:37] + "..." for p in parts]
        return f"{self.method}({', '.join(short)})"


@dataclass(frozen=True)
class NoScaling(RopeSpec):
    """Plain RoPE: inv_freq_i = b^(-2i/d)."""

    method: ClassVar[str] = "none"


@dataclass(frozen=True)
class LinearSpec(RopeSpec):
    """Position Interpolation: every pair divided by s (lambda_i = s)."""

    method: ClassVar[str] = "pi"
    factor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_factor(self.method, self.factor)


@dataclass(frozen=True)
class NTKSpec(RopeSpec):
    """Static NTK-aware scaling: base b' = b * s^(d/(d-2))."""

    method: ClassVar[str] = "ntk"
    factor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_factor(self.method, self.factor)


@dataclass(frozen=True)
class DynamicNTKSpec(RopeSpec):
    """Dynamic NTK (as transformers): at length n > L, b' = b * (s*n/L - (s-1))^(d/(d-2))."""

    method: ClassVar[str] = "dynamic_ntk"
    length_dependent: ClassVar[bool] = True
    factor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_factor(self.method, self.factor)


@dataclass(frozen=True)
class YarnSpec(RopeSpec):
    """YaRN: NTK-by-parts ramp between beta_fast and beta_slow rotations, attention factor 0.1*ln(s)+1."""

    method: ClassVar[str] = "yarn"
    factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_factor(self.method, self.factor)
        if not (self.beta_fast > 0 and self.beta_slow > 0):
            raise LongRopeError(f"yarn: beta_fast and beta_slow must be > 0, got {self.beta_fast}, {self.beta_slow}")
        if self.beta_fast < self.beta_slow:
            raise LongRopeError(f"yarn: beta_fast ({self.beta_fast}) must be >= beta_slow ({self.beta_slow})")
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise LongRopeError(f"yarn: attention_factor must be > 0, got {self.attention_factor}")


@dataclass(frozen=True)
class Llama3Spec(RopeSpec):
    """Llama-3.1: short wavelengths kept, long ones divided by s, a smooth blend in between."""

    method: ClassVar[str] = "llama3"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_factor(self.method, self.factor)
        if not 0 < self.low_freq_factor < self.high_freq_factor:
            raise LongRopeError(
                f"llama3: need 0 < low_freq_factor < high_freq_factor, got {self.low_freq_factor}, "
                f"{self.high_freq_factor}"
            )


@dataclass(frozen=True)
class LongRopeSpec(RopeSpec):
    """LongRoPE: per-pair rescale factors lambda_i (inv_freq_i / lambda_i).

    long_factor: used when a sequence is longer than the original window L.
    short_factor: used otherwise (defaults to all ones: plain RoPE inside the window).
    n_hat: the first n_hat positions keep the unscaled frequencies.
    factor: s = target window / L; sets the default attention factor sqrt(1 + ln(s)/ln(L)).
    attention_factor: overrides that default when given.
    """

    method: ClassVar[str] = "longrope"
    length_dependent: ClassVar[bool] = True  # short factors up to the window, long ones beyond
    long_factor: tuple[float, ...] = field(default_factory=tuple)
    short_factor: tuple[float, ...] | None = None
    n_hat: int = 0
    factor: float = 1.0
    attention_factor: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "long_factor", _check_factor_list("long_factor", self.long_factor))
        if self.short_factor is not None:
            short = _check_factor_list("short_factor", self.short_factor)
            if len(short) != len(self.long_factor):
                raise LongRopeError(
                    f"longrope: short_factor has {len(short)} entries but long_factor has {len(self.long_factor)}"
                )
            object.__setattr__(self, "short_factor", short)
        if not isinstance(self.n_hat, int) or isinstance(self.n_hat, bool) or self.n_hat < 0:
            raise LongRopeError(f"longrope: n_hat must be an integer >= 0, got {self.n_hat!r}")
        _check_factor(self.method, self.factor)
        if self.attention_factor is not None and not (
            math.isfinite(self.attention_factor) and self.attention_factor > 0
        ):
            raise LongRopeError(f"longrope: attention_factor must be > 0, got {self.attention_factor}")


@dataclass(frozen=True)
class StringSpec(RopeSpec):
    """STRING: relative distance r >= shift is attended as r - shift + local_window (HKUNLP/STRING).

    shift (S) defaults to int(0.33 * window) and local_window (W) to min(128, S // 2), where window is the
    extended window of ``base`` (L * its factor) or L. ``base`` is the scaling STRING sits on (none by default).
    attention_factor: multiplies cos and sin (the reference code uses 0.1*ln(2)+1); None for 1.
    """

    method: ClassVar[str] = "string"
    shift: int | None = None
    local_window: int | None = None
    attention_factor: float | None = None
    base: RopeSpec = field(default_factory=NoScaling)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.base, dict):
            object.__setattr__(self, "base", spec_from_dict(self.base))
        if not isinstance(self.base, RopeSpec):
            raise LongRopeError(f"string: base must be a spec (a table with a method), got {describe(self.base)}")
        if isinstance(self.base, StringSpec):
            raise LongRopeError("string: base cannot itself be a STRING spec")
        if self.shift is not None and (not isinstance(self.shift, int) or isinstance(self.shift, bool)
                                       or self.shift <= 0):
            raise LongRopeError(f"string: shift S must be a positive integer, got {self.shift!r}")
        if self.local_window is not None and (not isinstance(self.local_window, int) or self.local_window < 0):
            raise LongRopeError(f"string: local_window W must be an integer >= 0, got {self.local_window!r}")
        if self.shift is not None and self.local_window is not None and self.local_window >= self.shift:
            raise LongRopeError(
                f"string: local window W ({self.local_window}) must be smaller than the shift S ({self.shift})"
            )
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise LongRopeError(f"string: attention_factor must be > 0, got {self.attention_factor}")

    @property
    def length_dependent(self) -> bool:  # STRING moves distances; the frequencies are its base's
        return self.base.length_dependent

    def resolved(self, original_window: int) -> tuple[int, int]:
        """(S, W) for a model whose original window is ``original_window``; checks W < S."""
        window = self.original_window or original_window
        factor = getattr(self.base, "factor", 1.0) or 1.0
        extended = int(round(window * factor))
        shift = self.shift if self.shift is not None else int(0.33 * extended)
        # W = 128 as the paper, but at most S/2 so that short windows (e.g. 256 tokens) still get a valid map.
        local = self.local_window if self.local_window is not None else min(128, shift // 2)
        if shift <= 0:
            raise LongRopeError(f"string: shift S must be > 0, got {shift} (window {extended})")
        if local >= shift:
            raise LongRopeError(f"string: local window W ({local}) must be smaller than the shift S ({shift})")
        return shift, local


SPEC_TYPES: dict[str, type[RopeSpec]] = {
    cls.method: cls
    for cls in (NoScaling, LinearSpec, NTKSpec, DynamicNTKSpec, YarnSpec, Llama3Spec, LongRopeSpec, StringSpec)
}
ALIASES = {"linear": "pi", "default": "none", "dynamic": "dynamic_ntk", "ntk-aware": "ntk", "su": "longrope"}
METHODS = tuple(SPEC_TYPES)
# The spec saved beside config.json in a model directory that longrope wrote (a fine-tuned model, an HF export):
# `longrope.train.load_finetuned` and `longrope export verify/convert` read it back.
SPEC_FILE = "longrope_spec.json"


def method_class(method: str) -> type[RopeSpec]:
    if not isinstance(method, str):
        raise LongRopeError(f"method is {describe(method)}; expected a string, one of: {', '.join(METHODS)}")
    name = ALIASES.get(method, method)
    if name not in SPEC_TYPES:
        raise LongRopeError(f"unknown scaling method {method!r}{suggest(method, [*METHODS, *ALIASES])}; "
                            f"choose one of: {', '.join(METHODS)}")
    return SPEC_TYPES[name]


def _build(cls: type[RopeSpec], params: dict[str, Any], prefix: str) -> RopeSpec:
    """``cls(**params)`` once every parameter is a field of ``cls`` of its declared type; ``prefix`` names where
    the table sits (``base.`` for a STRING spec's base)."""
    try:
        check_table(params, field_types(cls), prefix=prefix, noun="parameter")
    except LongRopeError as exc:  # a nested table's keys are named in full (base.factor), the method is not
        raise LongRopeError(f"{exc}" if prefix else f"{cls.method}: {exc}") from None
    params = dict(params)
    if isinstance(params.get("base"), dict):  # a STRING spec's base, checked with its own key names
        params["base"] = spec_from_dict(params["base"], prefix=f"{prefix}base.")
    return cls(**params)


def make_spec(method: str, **params: Any) -> RopeSpec:
    """Build a spec by method name; unknown parameters and values of the wrong type are errors naming them."""
    return _build(method_class(method), params, "")


def spec_from_dict(data: dict[str, Any], prefix: str = "") -> RopeSpec:
    """The spec a parsed JSON object describes (``method`` plus that method's parameters)."""
    if not isinstance(data, dict):
        where = f"{prefix.rstrip('.')} " if prefix else "a spec "
        raise LongRopeError(f"{where}must be a JSON object, found {describe(data)}")
    data = dict(data)
    method = data.pop("method", None)
    if method is None:
        raise LongRopeError(f"a spec needs a '{prefix}method' field")
    try:
        cls = method_class(method)
    except LongRopeError as exc:
        raise LongRopeError(f"{prefix}{exc}" if prefix else str(exc)) from None
    return _build(cls, data, prefix)


def spec_from_json(text: str) -> RopeSpec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LongRopeError(f"spec is not valid JSON: {exc}") from None
    except RecursionError:
        raise LongRopeError("spec is nested too deeply to be read (the parser ran out of recursion)") from None
    return spec_from_dict(data)


def load_spec(path: str | Path) -> RopeSpec:
    """Read a spec JSON file (as written by `save_spec` or by `longrope search`), or a shipped preset's spec
    by name (``"smollm2-16k"``; `longrope.rope.presets`)."""
    if is_preset_name(str(path)):
        try:
            return spec_from_dict(read_preset(str(path))["spec"])
        except (LongRopeError, KeyError, TypeError) as exc:
            raise LongRopeError(f"preset {str(path)!r}: {exc}") from None
    path = Path(path)
    presets = ", ".join(preset_names()) or "none"
    data = read_document(path, "spec file", "json", f" (nor is it a preset; shipped: {presets})")
    try:
        return spec_from_dict(data)
    except LongRopeError as exc:
        raise LongRopeError(f"{path}: {exc}") from None


def save_spec(spec: RopeSpec, path: str | Path) -> Path:
    from longrope.atomic import atomic_write_text

    return atomic_write_text(path, spec.to_json() + "\n")


# -- transformers rope_parameters --------------------------------------------------------------------------

def to_rope_parameters(spec: RopeSpec, rope_theta: float, original_window: int | None = None) -> dict[str, Any]:
    """The ``config.rope_parameters`` dict that makes stock transformers compute the same frequencies.

    NTK-aware becomes ``default`` with the enlarged base (exact, but it reads back as plain RoPE).
    n_hat > 0 and STRING have no transformers equivalent: a `LongRopeError` says so.
    """
    window = spec.original_window or original_window
    out: dict[str, Any] = {"rope_theta": float(rope_theta)}
    if isinstance(spec, NoScaling):
        out["rope_type"] = "default"
    elif isinstance(spec, LinearSpec):
        out.update(rope_type="linear", factor=spec.factor)
    elif isinstance(spec, NTKSpec):
        raise LongRopeError(
            "ntk has no rope_type in transformers; use `ntk_base(spec, dim, base)` as rope_theta with rope_type "
            "'default' (the export command does this)"
        )
    elif isinstance(spec, DynamicNTKSpec):
        out.update(rope_type="dynamic", factor=spec.factor)
    elif isinstance(spec, YarnSpec):
        out.update(rope_type="yarn", factor=spec.factor, beta_fast=spec.beta_fast, beta_slow=spec.beta_slow)
        if spec.attention_factor is not None:
            out["attention_factor"] = spec.attention_factor
        if not spec.truncate:
            out["truncate"] = False
    elif isinstance(spec, Llama3Spec):
        out.update(
            rope_type="llama3",
            factor=spec.factor,
            low_freq_factor=spec.low_freq_factor,
            high_freq_factor=spec.high_freq_factor,
        )
    elif isinstance(spec, LongRopeSpec):
        if spec.n_hat:
            raise LongRopeError(
                f"longrope with n_hat={spec.n_hat}: transformers cannot keep the first positions unscaled"
            )
        short = spec.short_factor if spec.short_factor is not None else (1.0,) * len(spec.long_factor)
        out.update(rope_type="longrope", long_factor=list(spec.long_factor), short_factor=list(short),
                   factor=spec.factor)
        if spec.attention_factor is not None:
            out["attention_factor"] = spec.attention_factor
    elif isinstance(spec, StringSpec):
        raise LongRopeError("string changes attention itself; transformers' rope_parameters cannot express it")
    else:  # pragma: no cover - every spec type is handled above
        raise LongRopeError(f"no rope_parameters for {spec.method}")
    if out["rope_type"] in ("yarn", "llama3", "longrope", "linear", "dynamic"):
        if window is None:
            raise LongRopeError(f"{spec.method}: original_window is needed to write rope_parameters")
        if out["rope_type"] in ("yarn", "llama3", "longrope"):
            out["original_max_position_embeddings"] = int(window)
    return out


# The rope_parameters keys `from_rope_parameters` reads, with their types (a model's config.json is user data).
ROPE_PARAMETER_TYPES: dict[str, Any] = {
    "rope_type": str, "type": str, "factor": float | None, "original_max_position_embeddings": int | None,
    "beta_fast": float | None, "beta_slow": float | None, "attention_factor": float | None, "truncate": bool,
    "low_freq_factor": float, "high_freq_factor": float, "long_factor": list[float], "short_factor": list[float],
}


def from_rope_parameters(params: dict[str, Any], max_position_embeddings: int | None = None) -> RopeSpec:
    """The spec equivalent to a transformers ``rope_parameters`` dict (``rope_theta`` is ignored).

    A longrope dict without ``factor`` takes it as max_position_embeddings / original window, as transformers does.
    """
    if not isinstance(params, dict):
        raise LongRopeError(f"rope_parameters must be a dict, got {type(params).__name__}")
    for key, hint in ROPE_PARAMETER_TYPES.items():  # other keys (a runtime's own) are not ours to refuse
        found = problem(params[key], hint, f"rope_parameters.{key}") if key in params else None
        if found:
            raise LongRopeError(found)
    kind = params.get("rope_type", params.get("type", "default"))
    window = params.get("original_max_position_embeddings")
    window = int(window) if window is not None else None
    if kind == "default":
        return NoScaling(original_window=window)
    if kind == "linear":
        return LinearSpec(factor=float(params["factor"]), original_window=window)
    if kind == "dynamic":
        return DynamicNTKSpec(factor=float(params["factor"]), original_window=window)
    if kind == "yarn":
        attention = params.get("attention_factor")
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if attention is None and mscale and mscale_all_dim and float(params["factor"]) > 1:
            # DeepSeek's form, as transformers reads it: (0.1 mscale ln s + 1) / (0.1 mscale_all_dim ln s + 1).
            log = math.log(float(params["factor"]))
            attention = float((0.1 * mscale * log + 1.0) / (0.1 * mscale_all_dim * log + 1.0))
        return YarnSpec(
            factor=float(params["factor"]),
            beta_fast=float(params.get("beta_fast") or 32.0),
            beta_slow=float(params.get("beta_slow") or 1.0),
            attention_factor=attention,
            truncate=bool(params.get("truncate", True)),
            original_window=window,
        )
    if kind == "llama3":
        return Llama3Spec(
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_window=window,
        )
    if kind == "longrope":
        factor = params.get("factor")
        if factor is None and max_position_embeddings and window:
            factor = max(max_position_embeddings / window, 1.0)
        return LongRopeSpec(
            long_factor=tuple(params["long_factor"]),
            short_factor=tuple(params["short_factor"]),
            factor=float(factor or 1.0),
            attention_factor=params.get("attention_factor"),
            original_window=window,
        )
    raise LongRopeError(f"rope_type {kind!r} is not supported by longrope")


# The package (`longrope.rope`) re-exports exactly these.
__all__ = [
    "METHODS", "SPEC_FILE", "SPEC_TYPES", "DynamicNTKSpec", "LinearSpec", "Llama3Spec", "LongRopeSpec", "NTKSpec",
    "NoScaling", "RopeSpec", "StringSpec", "YarnSpec", "from_rope_parameters", "load_spec", "make_spec",
    "method_class", "save_spec", "spec_from_dict", "spec_from_json", "to_rope_parameters",
]
