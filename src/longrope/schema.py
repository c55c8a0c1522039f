"""The shapes of user files: one small validator that every reader (spec JSON, preset, plan TOML, ``--config``,
lock file) runs on what it parsed, before any value is used.

A schema is a mapping ``key -> type hint``, normally the fields of the dataclass that declares the settings
(`field_types`), so each setting's type is written once. `check_table` refuses, with one line naming the key,
what was found and what is expected:

- keys the schema does not have ("did you mean ...?" from `difflib`);
- a boolean where a number is expected (``bool`` is an ``int`` in Python), a string where a boolean is
  (``"false"`` would be true), NaN or an infinity anywhere a number is (TOML and Python's JSON accept them);
- a string where a list is (``"1111"`` iterates as four digits), a list of the wrong element type, a scalar
  where a table is.

Ranges, lengths that depend on other keys and the order of plan stages stay with the class or reader that owns
them: this module checks types only. `read_document` reads and parses a file, turning every way that can fail
(missing, unreadable, not UTF-8, bad syntax, nesting deep enough to exhaust the parser's recursion) into one
`LongRopeError` naming the file.

Why not pydantic: it is installed only as a transitive dependency of unrelated tools (not of ours), so using it
would add a new direct dependency; its errors are multi-line reports that we would have to flatten anyway; and
its lax mode coerces ``"4"`` to 4 and ``1`` to True, the very thing to refuse (strict mode refuses 4 as a float).
The rules above fit in about a hundred lines over the dataclasses we already have.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from longrope.errors import EnvironmentFailure, LongRopeError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None
_SYNTAX_ERRORS = (json.JSONDecodeError, tomllib.TOMLDecodeError) if tomllib else (json.JSONDecodeError,)

_SCALARS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
            float: ("a finite number", "finite numbers"), str: ("a string", "strings")}


def field_types(cls: type, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The schema of dataclass ``cls``: each field's name and its resolved type hint."""
    hints = _type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in exclude}


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:  # resolving the annotations' strings is slow; specs are made often
    return typing.get_type_hints(cls)


def describe(value: Any) -> str:
    """A short, one-line account of a parsed value: ``'1111' (a string)``, ``true (a boolean)``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} (not a finite number)"
    kind = ("an integer" if isinstance(value, int) else "a number" if isinstance(value, float)
            else "a string" if isinstance(value, str) else "a list" if isinstance(value, (list, tuple))
            else "a table" if isinstance(value, Mapping) else f"a {type(value).__name__}")
    try:
        text = repr(value)
    except RecursionError:  # a list nested hundreds deep (still within the parser's reach)
        text = "[[[..."
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({kind})"


def expected(hint: Any) -> str:
    """What a value of type ``hint`` looks like, in the words of the error messages."""
    if hint is type(None):
        return "null"
    if hint in _SCALARS:
        return _SCALARS[hint][0]
    if _is_union(hint):
        return " or ".join(expected(arm) for arm in typing.get_args(hint))
    element = _element(hint)
    if element is not None:
        return f"a list of {_SCALARS[element][1] if element in _SCALARS else expected(element)}"
    if hint is dict or typing.get_origin(hint) is dict:
        return "a table"
    if dataclasses.is_dataclass(hint):
        return f"a table ({hint.__name__})"
    return getattr(hint, "__name__", str(hint))


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _element(hint: Any) -> Any:
    """The element type of ``list[X]`` or ``tuple[X, ...]``; None for any other hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def problem(value: Any, hint: Any, name: str) -> str | None:
    """Why ``value`` is not of type ``hint`` (one line naming ``name``, or ``name[i]`` inside a list); None if it is."""
    if hint is Any:
        return None
    if _is_union(hint):
        arms = typing.get_args(hint)
        if any(problem(value, arm, name) is None for arm in arms):
            return None
        lists = [arm for arm in arms if _element(arm) is not None]
        if lists and isinstance(value, (list, tuple)):  # a list of the wrong elements: name the element
            return problem(value, lists[0], name)
        return f"{name} is {describe(value)}; expected {expected(hint)}"
    element = _element(hint)
    if element is not None:
        if not isinstance(value, (list, tuple)):
            return f"{name} is {describe(value)}; expected {expected(hint)}"
        for i, item in enumerate(value):
            found = problem(item, element, f"{name}[{i}]")
            if found:
                return found
        return None
    if hint is bool:
        fits = isinstance(value, bool)
    elif hint is int:
        fits = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif hint is type(None):
        fits = value is None
    elif hint is dict or typing.get_origin(hint) is dict:
        fits = isinstance(value, Mapping)
    elif dataclasses.is_dataclass(hint):  # a nested table, checked by its own reader
        fits = isinstance(value, (Mapping, hint))
    else:
        fits = isinstance(value, typing.get_origin(hint) or hint)
    return None if fits else f"{name} is {describe(value)}; expected {expected(hint)}"


def check_table(data: Any, schema: Mapping[str, Any], *, prefix: str = "", where: str = "",
                noun: str = "setting", what: str = "a table of settings") -> dict[str, Any]:
    """``data`` (a parsed table) as a dict, once every key is in ``schema`` and every value of its type.

    ``prefix`` is put before key names (``stages[2].``) so the message names the line to fix; ``where`` (e.g.
    ``stages[2] (search)``) heads the message about unknown keys instead, which then names them bare.
    """
    if not isinstance(data, Mapping):
        head = where or prefix.rstrip(".")
        raise LongRopeError(f"{head + ' ' if head else ''}must be {what}, found {describe(data)}")
    unknown = [key for key in data if key not in schema]
    if unknown:
        names = [f"{'' if where else prefix}{key}{suggest(str(key), schema)}" for key in unknown]
        raise LongRopeError(f"{where + ': ' if where else ''}unknown {noun}(s) {', '.join(names)}; "
                            f"valid: {', '.join(sorted(schema))}")
    for key, value in data.items():
        found = problem(value, schema[key], f"{prefix}{key}")
        if found:
            raise LongRopeError(found)
    return dict(data)


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    """`` (did you mean X?)`` for the choice closest to a mistyped ``name``, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def read_document(path: str | Path, what: str, fmt: str | None = None, missing_hint: str = "") -> Any:
    """The parsed JSON or TOML (``fmt``; default: by the suffix, ``.json`` or else TOML) of file ``path``.

    ``what`` names the file in the one-line `LongRopeError` of every failure (``"spec file"``, ``"plan file"``).
    """
    path = Path(path)
    fmt = fmt or ("json" if path.suffix == ".json" else "toml")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise LongRopeError(f"{what} {path} does not exist{missing_hint}") from None
    except IsADirectoryError:
        raise LongRopeError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:  # a permission or a failing disk: the machine's fault, not the input's (exit 1)
        raise EnvironmentFailure(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise LongRopeError(f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                            f"{exc.start}); save it as UTF-8") from None
    if fmt != "json" and tomllib is None:
        raise LongRopeError(f"reading {what} {path} on Python 3.10 needs the 'tomli' package: pip install tomli")
    try:
        return json.loads(text) if fmt == "json" else tomllib.loads(text)
    except _SYNTAX_ERRORS as exc:
        raise LongRopeError(f"{what} {path} is not valid {fmt.upper()}: {exc}") from None
    except RecursionError:
        raise LongRopeError(f"{what} {path} is nested too deeply to be read (the parser ran out of recursion)") \
            from None


__all__ = ["check_table", "describe", "expected", "field_types", "problem", "read_document", "suggest"]
