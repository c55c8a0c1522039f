"""`longrope.validation`, and every command refusing bad input through the console entry point before any work.

The commands run with model loading replaced by a failure, so a check that comes too late fails the test
instead of loading (or building) a model; each case takes milliseconds.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from longrope import cli
from longrope.errors import LongRopeError
from longrope.models import loading
from longrope.rope import YarnSpec, save_spec
from longrope.validation import check_number, check_output_dir

NON_FINITE = ["nan", "inf", "-inf", "NaN", "-Infinity"]
EVAL_COUNTS = {  # per eval command: its options that count something (>= 1)
    "ppl": ["--n-docs", "--stride", "--chunk"],
    "passkey": ["--trials", "--max-new-tokens"],
    "needle": ["--depths", "--trials", "--max-new-tokens"],
    "ruler": ["--samples"],
}
SEARCH_INTS = {"--length": 2, "--population": 1, "--parents": 1, "--generations": 0, "--mutations": 0,
               "--crossovers": 0, "--max-evaluations": 1, "--docs": 1, "--batch": 1, "--critical-pair": 0,
               "--needles-per-doc": 1, "--max-forward-tokens": 1}


def _refuse_to_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the command checked its input")


def run(*args: object) -> tuple[int, str]:
    """(exit status, error output) of ``longrope ARGS`` through `longrope.cli.main`, with model loading forbidden."""
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["longrope", *map(str, args)])
        patch.setattr(loading, "load_model", _refuse_to_load)
        # Wide, so that the test sees the message's own lines, not rich's wrapping at 80 columns.
        patch.setattr(cli, "err_console", Console(file=stderr, width=10_000))
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    return exit_info.value.code, stderr.getvalue()


def assert_refused(code: int, err: str, option: str, value: object = None) -> None:
    """Exit status 2 and one line ``error: ...`` that names ``option`` (and ``value``), no traceback."""
    assert code == 2, err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    name = option.lstrip("-").replace("-", "_")
    assert name in err.replace("-", "_"), (option, err)  # the config spells --lambda-max as lambda_max
    if value is not None:
        assert str(value).lower() in err.lower(), (value, err)


@pytest.fixture()
def spec_file(tmp_path_factory):
    return save_spec(YarnSpec(factor=2.0), tmp_path_factory.mktemp("spec") / "yarn.json")


def commands(spec, out) -> dict[str, list[object]]:
    """Each command that writes into --out, with the options it needs besides."""
    runs = {f"eval {name}": ["eval", name, "--model", "tiny", "--out", out] for name in EVAL_COUNTS}
    runs["search"] = ["search", "--factor", 4, "--out", out]
    runs["finetune"] = ["finetune", "--spec", spec, "--length", 64, "--steps", 1, "--out", out]
    runs["extend"] = ["extend", "--out", out]
    runs["export"] = ["export", "tiny", "--spec", spec, "--out", out]
    return runs


# ------------------------------------------------------------------------------------------------- the helpers


def test_check_number():
    assert check_number("--x", None, minimum=1) is None
    assert check_number("--x", 2.5, minimum=1, maximum=3) == 2.5
    assert check_number("--x", 0, minimum=0) == 0
    for bad in (math.nan, math.inf, -math.inf, True, "3"):
        with pytest.raises(LongRopeError, match="--x must be a finite number"):
            check_number("--x", bad)
    with pytest.raises(LongRopeError, match="--x must be >= 1, got 0.5"):
        check_number("--x", 0.5, minimum=1)
    with pytest.raises(LongRopeError, match="--x must be > 0, got 0"):
        check_number("--x", 0, above=0)
    with pytest.raises(LongRopeError, match="--x must be <= 3, got 4"):
        check_number("--x", 4, maximum=3)


def test_check_output_dir(tmp_path):
    assert check_output_dir("--out", tmp_path) == tmp_path
    assert check_output_dir("--out", tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checked, not created
    (tmp_path / "file").write_text("keep")
    with pytest.raises(LongRopeError, match="is a file; give a directory"):
        check_output_dir("--out", tmp_path / "file")
    with pytest.raises(LongRopeError, match="cannot be created: .*file is a file"):
        check_output_dir("--out", tmp_path / "file" / "sub")
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    with pytest.raises(LongRopeError, match="broken symbolic link"):
        check_output_dir("--out", tmp_path / "link")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_dir_unwritable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(LongRopeError, match="no write permission"):
            check_output_dir("--out", locked / "new")
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------------------------- --out in every command


@pytest.mark.parametrize("command", [*(f"eval {name}" for name in EVAL_COUNTS), "search", "finetune", "extend",
                                     "export"])
@pytest.mark.parametrize("nested", [False, True], ids=["file", "below-file"])
def test_out_naming_a_file_is_refused_up_front(tmp_path, spec_file, command, nested):
    blocker = tmp_path / "results"
    blocker.write_text("keep")
    out = blocker / "sub" if nested else blocker
    code, err = run(*commands(spec_file, out)[command])
    assert_refused(code, err, "--out")
    assert "is a file" in err
    assert blocker.read_text() == "keep" and sorted(tmp_path.iterdir()) == [blocker]


def test_convert_out_dir_naming_a_file(tmp_path):
    (tmp_path / "results").write_text("keep")
    code, err = run("convert", tmp_path / "missing.gguf", tmp_path / "results")
    assert_refused(code, err, "OUT_DIR")
    assert (tmp_path / "results").read_text() == "keep"


def test_python_dash_m_exits_2_without_traceback(tmp_path):
    (tmp_path / "results").write_text("keep")
    # A missing model would give another error: the --out message proves the check came first.
    proc = subprocess.run([sys.executable, "-m", "longrope", "eval", "ppl", "--model", str(tmp_path / "no-model"),
                           "--out", str(tmp_path / "results")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    assert "--out" in proc.stderr and "is a file" in " ".join(proc.stderr.split())


# ------------------------------------------------------------------------------------------- numeric options


@pytest.mark.parametrize("args, option, value", [
    (["eval", "ppl", "--factor=nan"], "--factor", "nan"),
    (["eval", "passkey", "--factor", "0.5"], "--factor", "0.5"),
    (["eval", "needle", "--lengths", "1x,inf"], "--lengths", "inf"),
    (["eval", "ruler", "--lengths", "-4"], "--lengths", "-4"),
    (["eval", "ppl", "--stride", "0"], "--stride", "0"),
    (["search", "--factor=-inf"], "--factor", "-inf"),
    (["search", "--factor", "1"], "--factor", "1"),
    (["search", "--factor", "4", "--lambda-max", "0.5"], "--lambda-max", "0.5"),
    (["search", "--factor", "4", "--racing-z=nan"], "--racing-z", "nan"),
    (["search", "--factor", "4", "--racing-rank", "-1"], "--racing-rank", "-1"),
    (["search", "--length", "1"], "--length", "1"),
    (["search", "--factor", "4", "--length", "999"], "--length", "999"),
    (["search", "--factor", "4", "--generations", "-1"], "--generations", "-1"),
    (["finetune", "--spec", "SPEC", "--length", "64", "--steps", "0"], "steps", "0"),
    (["finetune", "--spec", "SPEC", "--length", "64", "--steps", "5", "--lr=inf"], "--lr", "inf"),
    (["finetune", "--spec", "SPEC", "--length", "64", "--steps", "5", "--lr", "0"], "--lr", "0"),
    (["finetune", "--spec", "SPEC", "--length", "1", "--steps", "5"], "--length", "1"),
    (["finetune", "--spec", "SPEC", "--length", "64", "--steps", "5", "--batch", "0"], "batch", "0"),
    (["export", "tiny", "--spec", "SPEC", "--window", "0"], "--window", "0"),
])
def test_bad_numbers_are_refused_up_front(tmp_path, spec_file, args, option, value):
    out = tmp_path / "out"
    args = [spec_file if a == "SPEC" else a for a in args]
    code, err = run(*args, "--out", out)
    assert_refused(code, err, option, value)
    assert not out.exists()


def test_a_plan_with_an_infinite_factor_is_refused_before_the_first_stage(tmp_path):
    from longrope.recipes.plan import default_plan_path

    plan = tmp_path / "plan.toml"
    plan.write_text(default_plan_path().read_text().replace("factor = 16", "factor = inf"))
    code, err = run("extend", plan, "--out", tmp_path / "out")
    assert_refused(code, err, "stages[2].factor", "inf")
    assert not (tmp_path / "out").exists()


def bad_float(minimum: float, strict: bool):
    """Text of a float that is not finite, or below ``minimum`` (at or below it when ``strict``)."""
    low = st.floats(max_value=minimum, exclude_max=not strict, allow_nan=False, allow_infinity=False)
    return st.sampled_from(NON_FINITE) | low.map(repr)


def eval_cases():
    float_case = st.tuples(st.sampled_from(sorted(EVAL_COUNTS)), st.just("--factor"), bad_float(1, strict=False))
    lengths_case = st.tuples(
        st.sampled_from(sorted(EVAL_COUNTS)), st.just("--lengths"),
        (st.sampled_from(NON_FINITE) | st.floats(max_value=0, allow_nan=False).map(repr))
        .flatmap(lambda bad: st.sampled_from([bad, f"{bad}x", f"1x,{bad}", f"256,{bad}x"])))
    count_case = st.sampled_from([(c, o) for c, options in EVAL_COUNTS.items() for o in options]).flatmap(
        lambda pair: st.tuples(st.just(pair[0]), st.just(pair[1]), st.integers(max_value=0).map(str)))
    return (float_case | lengths_case | count_case).map(lambda c: (["eval", c[0]], c[1], c[2]))


def search_cases():
    floats = st.sampled_from([("--factor", 1, True), ("--lambda-max", 1, False)]).flatmap(
        lambda f: st.tuples(st.just(f[0]), bad_float(f[1], f[2])))
    racing = st.tuples(st.just("--racing-z"), st.sampled_from(NON_FINITE))
    ints = st.sampled_from(sorted(SEARCH_INTS.items())).flatmap(
        lambda item: st.tuples(st.just(item[0]), st.integers(max_value=item[1] - 1).map(str)))
    # --factor 4 makes every case but the one under test valid (a later --factor replaces it).
    return (floats | racing | ints).map(lambda c: (["search", "--factor", "4"], c[0], c[1]))


FINETUNE_INTS = {"--steps": 1, "--batch": 1, "--accum": 1, "--length": 2}


def finetune_and_export_cases():
    ints = st.sampled_from(sorted(FINETUNE_INTS.items())).flatmap(
        lambda item: st.tuples(st.just(item[0]), st.integers(max_value=item[1] - 1).map(str)))
    lr = st.tuples(st.just("--lr"), bad_float(0, strict=True))
    finetune = (ints | lr).map(lambda c: (["finetune", "--spec", "SPEC", "--length", "64", "--steps", "5"], *c))
    window = st.tuples(st.just(["export", "tiny", "--spec", "SPEC"]), st.just("--window"),
                       st.integers(max_value=0).map(str))
    return finetune | window


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=eval_cases() | search_cases() | finetune_and_export_cases())
def test_any_bad_number_is_one_line_before_any_work(tmp_path, spec_file, case):
    prefix, option, text = case
    prefix = [spec_file if a == "SPEC" else a for a in prefix]
    out = tmp_path / "never-written"
    code, err = run(*prefix, f"{option}={text}", "--out", out)
    value = text.split(",")[-1].removesuffix("x") if option == "--lengths" else text
    if option != "--lengths" and text.lower() not in err.lower():
        value = float(text)  # the message shows the parsed number: '1e-05' for '0.00001', '-0' for '-0.0'
        assert f"{value!r}" in err or f"{value:g}" in err, (text, err)
        value = None
    assert_refused(code, err, option, value)
    assert not out.exists()


# ---------------------------------------------------------------- verify, demo and plan files: the same property

VERIFY_INTS = {"--new-tokens": 1, "--below": 2, "--above": 2}
DEMO_INTS = {"--generations": 0, "--eval-docs": 1, "--trials": 1}


def verify_and_demo_cases():
    verify_ints = st.sampled_from(sorted(VERIFY_INTS.items())).flatmap(
        lambda item: st.tuples(st.just(item[0]), st.integers(max_value=item[1] - 1).map(str)))
    tolerance = st.tuples(st.just("--tolerance"), bad_float(0, strict=False))
    # The export directory is checked after the numbers: a missing one would give another error.
    verify = (verify_ints | tolerance).map(lambda c: (["verify", "EXPORT"], *c))
    demo = st.sampled_from(sorted(DEMO_INTS.items())).flatmap(
        lambda item: st.tuples(st.just(["demo"]), st.just(item[0]), st.integers(max_value=item[1] - 1).map(str)))
    return verify | demo


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=verify_and_demo_cases())
def test_verify_and_demo_refuse_any_bad_number_in_one_line(tmp_path, case):
    prefix, option, text = case
    prefix = [str(tmp_path) if a == "EXPORT" else a for a in prefix]
    out = tmp_path / "never-written"
    code, err = run(*prefix, f"{option}={text}", "--out", out)
    assert_refused(code, err, option)
    assert not out.exists()


def _plan_toml(plan: dict) -> str:
    """``plan`` (top-level scalars, tables, and the ``stages`` array of tables) written back as TOML."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
        return repr(v) if isinstance(v, int) else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {value(v)}" for k, v in plan.items() if not isinstance(v, (dict, list))]
    for name, table in plan.items():
        if isinstance(table, dict):
            lines += [f"[{name}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    for stage in plan["stages"]:
        lines += ["[[stages]]", *(f"{k} = {value(v)}" for k, v in stage.items())]
    return "\n".join(lines) + "\n"


def _shipped_plan() -> dict:
    from importlib import resources

    import tomllib

    return tomllib.loads((resources.files("longrope") / "plans" / "tiny.toml").read_text())


def plan_cases():
    """(stage index, key, bad value) for every numeric key of every stage of the shipped plan."""
    numeric = [(index, key, type(value)) for index, stage in enumerate(_shipped_plan()["stages"])
               for key, value in stage.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
    return st.sampled_from(numeric).flatmap(lambda c: st.tuples(
        st.just(c[0]), st.just(c[1]),
        st.integers(max_value=-1) | non_finite if c[2] is int
        # 0.0 is a valid fraction (retrieval_fraction = 0: no retrieval windows), so floats are strictly negative
        else st.floats(max_value=0, exclude_max=True) | non_finite))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=plan_cases())
def test_a_plan_with_any_bad_number_is_refused_before_the_first_stage(tmp_path, case):
    index, key, bad = case
    plan = _shipped_plan()
    plan["stages"][index][key] = bad
    path = tmp_path / "plan.toml"
    path.write_text(_plan_toml(plan))
    out = tmp_path / f"never-written-{uuid.uuid4().hex}"  # tmp_path is shared by every example hypothesis draws
    code, err = run("extend", path, "--out", out)
    assert_refused(code, err, key)
    assert f"stages[{index}]" in err, err
    assert not out.exists()


def test_the_plan_writer_of_these_tests_round_trips_the_shipped_plan():
    import tomllib

    assert tomllib.loads(_plan_toml(_shipped_plan())) == _shipped_plan()
