"""Needle grid (accuracy per cell, heatmap) and RULER-style tasks (prompts, scoring, tables)."""

from __future__ import annotations

import json
import random

import pytest

from longrope.errors import LongRopeError
from longrope.eval.needle import evaluate_needle, needle_grid, parse_depths, write_needle_report
from longrope.eval.ruler import (
    TASKS,
    Haystack,
    build_ruler_prompt,
    evaluate_ruler,
    make_task,
    string_match_score,
    write_ruler_report,
)
from longrope.rope import make_spec


def test_needle_grid_with_a_window_limited_retriever(tiny_loaded, oracle_factory, tmp_path):
    _, tokenizer = tiny_loaded
    oracle = oracle_factory(tokenizer, window=150)
    grid = needle_grid(oracle, tokenizer, lengths=[140, 600], depths=3, trials=2, template="code", progress=False)
    assert grid.depths == [0.0, 0.5, 1.0]
    # rows = depths, columns = lengths: everything inside the window; beyond it only the deepest needle
    assert grid.accuracy() == [[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
    paths = write_needle_report({"oracle": grid}, tmp_path, settings={"trials": 2}, seed=0)
    assert paths["heatmap:oracle"].read_bytes()[:4] == b"\x89PNG"
    data = json.loads(paths["json"].read_text())
    assert data["grids"]["oracle"]["accuracy"] == grid.accuracy() and len(data["grids"]["oracle"]["trials"]) == 12
    assert "| 100% | 100% | 100% |" in paths["markdown"].read_text()


def test_needle_bad_depths():
    with pytest.raises(LongRopeError, match="between 0 and 1"):
        parse_depths([0.5, 50])
    with pytest.raises(LongRopeError, match=">= 1"):
        parse_depths(0)


def test_evaluate_needle_restores_the_model(tiny_loaded):
    model, tokenizer = tiny_loaded
    grids = evaluate_needle(model, tokenizer, {"pi": make_spec("pi", factor=2)}, [128], depths=[0.5], trials=1,
                            template="code", progress=False)
    assert len(grids["pi"].trials) == 1 and not hasattr(model, "_longrope_patch")


@pytest.mark.parametrize("output,expected,score", [
    ("12345", ["12345"], 1.0),
    (" 1234", ["12345"], 0.0),
    ("[11111, 22222, 33333]", ["11111", "22222", "33333", "44444"], 0.75),
    ("ABCDE, fghij", ["ABCDE", "FGHIJ"], 1.0),
])
def test_string_match_score(output, expected, score):
    assert string_match_score(output, expected) == score


@pytest.fixture(scope="module")
def haystack(tiny_loaded):
    return Haystack(tiny_loaded[1], "stdlib", "test", tokens=600)


@pytest.mark.parametrize("style", ["natural", "code"])
@pytest.mark.parametrize("task", TASKS)
def test_ruler_prompts_have_exact_length_and_needles_in_order(tiny_loaded, haystack, task, style):
    _, tokenizer = tiny_loaded
    for seed in range(3):
        rng = random.Random(seed)
        prompt = make_task(task, rng, style)
        ids = build_ruler_prompt(tokenizer, haystack, prompt, 500, rng)
        assert len(ids) == 500 and ids[0] == tokenizer.bos_token_id
        text = tokenizer.decode(ids, skip_special_tokens=True)
        assert text.startswith(prompt.instruction) and text.endswith(prompt.question)
        positions = [text.index(n) for n in prompt.needles]
        assert positions == sorted(positions)  # needles present, in their order
        assert all(e in "".join(prompt.needles) for e in prompt.expected)
    with pytest.raises(LongRopeError, match="too short"):
        build_ruler_prompt(tokenizer, haystack, make_task(task, random.Random(0), style), 20, random.Random(0))


def test_ruler_tasks_expected_answers():
    rng = random.Random(0)
    assert len(make_task("multivalue", rng).expected) == 4
    vt = make_task("vartrack", rng, "code")
    assert len(vt.expected) == 4 and len(vt.needles) == 8
    with pytest.raises(LongRopeError, match="unknown RULER task"):
        make_task("qa", rng)


def test_evaluate_ruler_table_and_report(tiny_loaded, tmp_path):
    model, tokenizer = tiny_loaded
    table = evaluate_ruler(model, tokenizer, {"none": make_spec("none")}, [300], tasks=["single", "vartrack"],
                           samples=2, style="code", progress=False)
    acc = table.accuracy()["none"]
    assert set(acc) == {"single", "vartrack", "average"}
    assert 0.0 <= acc["average"][300] <= 1.0
    paths = write_ruler_report(table, tmp_path, {"style": "code"}, seed=0)
    data = json.loads(paths["json"].read_text())
    assert len(data["samples"]["none"]) == 4 and "| none | average |" in paths["markdown"].read_text()
    assert not hasattr(model, "_longrope_patch")
