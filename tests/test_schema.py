"""`longrope.schema` through every user file format: a value of the wrong kind for any key of a spec JSON, a plan
TOML or a ``--config`` file is one `LongRopeError` line naming the file and the key; through the CLI, exit code 2,
one stderr line and nothing written. The wrong kinds are chosen here from each key's declared type (not by the
validator under test): strings, lists, booleans, null, NaN, infinities, nested tables.
"""

from __future__ import annotations

import io
import json
import math
import sys
import tempfile
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from longrope import cli
from longrope.config_files import read_config_file
from longrope.errors import LongRopeError
from longrope.models import loading
from longrope.recipes.plan import load_plan, stage_schema
from longrope.rope import SPEC_TYPES, StringSpec, YarnSpec, load_spec
from longrope.schema import field_types
from longrope.search.evolution import SearchConfig
from longrope.train.config import FinetuneConfig

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Every kind of parsed value, and how to draw one.
KINDS = {
    "bool": st.booleans(),
    "int": st.integers(-10**6, 10**6),
    "float": st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)),
    "nonfinite": st.sampled_from([math.nan, math.inf, -math.inf]),
    "str": st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=16),
    "list": st.lists(st.integers(0, 9), max_size=3),
    "wrong_list": st.sampled_from([["a"], [True], [[1.0]], [1.0, "2"]]),
    "table": st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2),
    "null": st.none(),
}


def accepted_kinds(hint) -> set[str]:
    """The kinds a key of type ``hint`` accepts (an integer is a number; a list of numbers for a list)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*(accepted_kinds(arm) for arm in typing.get_args(hint)))
    simple = {bool: {"bool"}, int: {"int"}, float: {"int", "float"}, str: {"str"}, type(None): {"null"},
              dict: {"table"}}
    if hint in simple:
        return simple[hint]
    if typing.get_origin(hint) in (list, tuple):
        return {"list"}
    return {"table"}  # a nested spec


def wrong_value(draw, hint, toml: bool):
    """A value of a kind ``hint`` does not accept (no null in TOML: it has none); ``wrong_list`` (a list of
    anything but numbers) is wrong for every key."""
    kinds = sorted(set(KINDS) - accepted_kinds(hint) - ({"null"} if toml else set()))
    return draw(KINDS[draw(st.sampled_from(kinds))])


def toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise AssertionError(value)


def toml_table(table: dict) -> str:
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())


def assert_one_line_naming(exc: LongRopeError, *names: str) -> None:
    message = str(exc)
    assert "\n" not in message, message
    for name in names:
        assert name in message, (name, message)


# A valid spec of each method, the base a wrong value is put into.
VALID_SPECS = {"none": {}, "longrope": {"long_factor": [1.0, 2.0], "factor": 2.0}, "string": {}}


@st.composite
def spec_with_a_wrong_value(draw):
    method = draw(st.sampled_from(sorted(SPEC_TYPES)))
    cls = SPEC_TYPES[method]
    schema = {"method": str, **field_types(cls)}
    key = draw(st.sampled_from(sorted(schema)))
    data = {"method": method, **VALID_SPECS.get(method, {"factor": 2.0})}
    data[key] = wrong_value(draw, schema[key], toml=False)
    return key, data


@FAST
@given(case=spec_with_a_wrong_value())
def test_a_spec_file_with_a_wrong_type_is_one_line_naming_the_file_and_key(tmp_path, case):
    key, data = case
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))  # NaN and Infinity as Python's json writes (and reads) them
    with pytest.raises(LongRopeError) as refused:
        load_spec(path)
    assert_one_line_naming(refused.value, str(path), key)


def test_specs_refuse_the_classic_mistakes(tmp_path):
    cases = [
        ({"method": "longrope", "long_factor": "1111111111111111"}, "long_factor is '1111111111111111' (a string)"),
        ({"method": ["yarn"]}, "method is ['yarn'] (a list); expected a string"),
        ({"method": "yarn", "factor": 2, "attention_factor": math.inf}, "attention_factor is inf"),
        ({"method": "yarn", "factor": 2, "truncate": "false"},
         "truncate is 'false' (a string); expected true or false"),
        ({"method": "pi", "factor": True}, "factor is true (a boolean); expected a finite number"),
        ({"method": "string", "base": "yarn"}, "base is 'yarn' (a string); expected a table"),
        ({"method": "string", "base": ["yarn"]}, "base is ['yarn'] (a list)"),
        ({"method": "string", "base": {"method": "yarn", "factor": "4"}}, "base.factor is '4' (a string)"),
        ({"method": "yarn", "factr": 4}, "unknown parameter(s) factr (did you mean factor?)"),
        ({"method": "yran", "factor": 4}, "unknown scaling method 'yran' (did you mean yarn?)"),
    ]
    for data, message in cases:
        path = tmp_path / "spec.json"
        path.write_text(json.dumps(data))
        with pytest.raises(LongRopeError) as refused:
            load_spec(path)
        assert_one_line_naming(refused.value, str(path), message)
    assert load_spec(_write(tmp_path / "ok.json", json.dumps({"method": "string", "base": {"method": "yarn",
                                                                                         "factor": 4}}))) == \
        StringSpec(base=YarnSpec(factor=4.0))


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


PLAN = {"model": {"name": "tiny"}, "stages": [{"kind": "search", "factor": 4}, {"kind": "finetune", "length": 1024,
        "steps": 10}, {"kind": "search_short"}, {"kind": "export"}, {"kind": "evaluate"}]}


def plan_toml(data: dict) -> str:
    text = "".join(f"{k} = {toml_value(v)}\n" for k, v in data.items() if k not in ("model", "data", "stages"))
    for table in ("model", "data"):
        if table in data:
            text += f"[{table}]\n{toml_table(data[table])}"
    for stage in data["stages"]:
        text += f"[[stages]]\n{toml_table(stage)}"
    return text


@st.composite
def plan_with_a_wrong_value(draw):
    data = json.loads(json.dumps(PLAN))
    where = draw(st.sampled_from(["top", "model", "data", 0, 1, 2, 3, 4]))
    if where == "top":
        key = draw(st.sampled_from(["seed", "description"]))
        data[key] = wrong_value(draw, {"seed": int, "description": str}[key], toml=True)
        return key, data
    if where in ("model", "data"):
        schema = {"model": {"name": str, "dtype": str}, "data": {"corpus": str}}[where]
        key = draw(st.sampled_from(sorted(schema)))
        data.setdefault(where, {})[key] = wrong_value(draw, schema[key], toml=True)
        return f"{where}.{key}", data
    stage = data["stages"][where]
    schema = stage_schema(stage["kind"])
    key = draw(st.sampled_from(sorted(schema)))
    stage[key] = wrong_value(draw, schema[key], toml=True)
    return f"stages[{where}].{key}", data


@FAST
@given(case=plan_with_a_wrong_value())
def test_a_plan_with_a_wrong_type_is_one_line_naming_the_file_and_key(tmp_path, case):
    key, data = case
    path = _write(tmp_path / "plan.toml", plan_toml(data))
    with pytest.raises(LongRopeError) as refused:
        load_plan(path)
    assert_one_line_naming(refused.value, str(path), key)


@st.composite
def config_with_a_wrong_value(draw):
    cls = draw(st.sampled_from([SearchConfig, FinetuneConfig]))
    schema = field_types(cls)
    key = draw(st.sampled_from(sorted(schema)))
    suffix = draw(st.sampled_from([".toml", ".json"]))
    return cls, suffix, key, wrong_value(draw, schema[key], toml=suffix == ".toml")


@FAST
@given(case=config_with_a_wrong_value())
def test_a_config_file_with_a_wrong_type_is_one_line_naming_the_file_and_key(tmp_path, case):
    cls, suffix, key, value = case
    text = toml_table({key: value}) if suffix == ".toml" else json.dumps({key: value})
    path = _write(tmp_path / f"c{suffix}", text)
    with pytest.raises(LongRopeError) as refused:
        read_config_file(path, cls)
    assert_one_line_naming(refused.value, str(path), key)


def run(*args: object) -> tuple[int, str]:
    """(exit status, error output) of ``longrope ARGS`` through `longrope.cli.main`, with model loading forbidden."""
    stderr = io.StringIO()

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the command checked its input")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["longrope", *map(str, args)])
        patch.setattr(loading, "load_model", refuse)
        patch.setattr(cli, "err_console", Console(file=stderr, width=10_000))
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    return exit_info.value.code, stderr.getvalue()


@settings(max_examples=40, deadline=None)
@given(case=config_with_a_wrong_value(), command=st.sampled_from(["search", "extend"]))
def test_the_cli_refuses_a_wrong_type_with_exit_2_one_line_and_nothing_written(case, command):
    cls, suffix, key, value = case
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if command == "search":
            text = toml_table({key: value}) if suffix == ".toml" else json.dumps({key: value})
            path = _write(folder / f"c{suffix}", text)
            code, err = run("search", "--out", folder / "out", "--no-progress", "--config", path)
        else:  # the same wrong value in a plan stage of the config's kind
            data = json.loads(json.dumps(PLAN))
            stage = 0 if cls is SearchConfig else 1
            if key == "target_length" and stage == 0:
                key = "length"
            data["stages"][stage][key] = value if suffix == ".toml" or value is not None else math.nan
            path = _write(folder / "plan.toml", plan_toml(data))
            key = f"stages[{stage}].{key}"
            code, err = run("extend", path, "--out", folder / "out", "--no-progress")
        assert code == 2, err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
        assert key in err and str(path) in err, err
        assert sorted(p.name for p in folder.iterdir()) == [path.name]  # nothing written, not even a lock


DEEP_LIST = "[" * 900 + "]" * 900  # parsed, perhaps, but too deep to print in full


@pytest.mark.parametrize("reader, suffix", [(load_spec, ".json"), (load_plan, ".toml"),
                                            (lambda p: read_config_file(p, SearchConfig), ".json"),
                                            (lambda p: read_config_file(p, FinetuneConfig), ".toml")])
@pytest.mark.parametrize("content", [b"factor = 2\xff\xfe\n", "[" * 100_000, "a = " + "[" * 100_000,
                                     '{"method": "pi", "factor": ' + DEEP_LIST + "}", "factor = " + DEEP_LIST])
def test_non_utf8_and_too_deep_files_are_one_clear_error(tmp_path, reader, suffix, content):
    path = _write(tmp_path / f"f{suffix}", content)
    with pytest.raises(LongRopeError) as refused:
        reader(path)
    assert_one_line_naming(refused.value, str(path))
    if isinstance(content, bytes):
        assert "not UTF-8" in str(refused.value)


def test_an_unreadable_document_is_the_machines_fault_not_the_inputs(tmp_path, monkeypatch):
    """A permission error is an `EnvironmentFailure` (the CLI exits 1), not bad input (exit 2); a missing file
    stays bad input."""
    from longrope.errors import EnvironmentFailure
    from longrope.schema import read_document

    path = tmp_path / "spec.json"
    path.write_text("{}")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(EnvironmentFailure, match=r"cannot read spec file .*spec\.json: Permission denied"):
        read_document(path, "spec file")
    monkeypatch.undo()
    with pytest.raises(LongRopeError, match="does not exist") as missing:
        read_document(tmp_path / "none.json", "spec file")
    assert not isinstance(missing.value, EnvironmentFailure)
