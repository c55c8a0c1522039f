"""End-to-end searches on a random tiny model: outputs, exact racing, batching, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from search_helpers import small_config, small_data, small_model

from longrope.errors import LongRopeError
from longrope.rope import LongRopeSpec, load_spec
from longrope.search import search, search_short
from longrope.search.state import STATE_FILE


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def baseline(model, tmp_path_factory):
    """An uninterrupted search without racing: the reference trajectory."""
    out = tmp_path_factory.mktemp("plain")
    return search(model, None, small_config(racing=False, batch=1), out, data=small_data(), progress=False)


def test_outputs(baseline):
    r = baseline
    spec = load_spec(r.spec_path)
    assert isinstance(spec, LongRopeSpec) and spec == r.spec and spec.factor == 4
    assert r.plot_path.stat().st_size > 1000
    lines = [json.loads(line) for line in r.log_path.read_text().splitlines()]
    assert len(lines) == r.evaluations == len({json.dumps(x["genome"]) for x in lines})  # no duplicates
    assert {x["seed"] for x in lines} >= {"pi", "ntk", "yarn"}
    assert r.fitness == min(x["fitness"] for x in lines)
    assert r.fitness <= min(r.seeds.values())
    assert [h["generation"] for h in r.history] == list(range(5))
    assert all(a["best"] >= b["best"] for a, b in zip(r.history, r.history[1:]))
    assert r.evaluations == 12 + 4 * 8


def test_exact_racing_and_batching_keep_the_trajectory(model, baseline, tmp_path):
    """Racing with bound 0 is exact: same best, fewer forward tokens, whatever the batch size."""
    r = search(
        model,
        None,
        small_config(racing=True, racing_z=None, racing_rank=6, batch=4),  # rank = parents: the same selection
        tmp_path,
        data=small_data(),
        progress=False,
    )
    assert r.genome == baseline.genome and r.fitness == pytest.approx(baseline.fitness, abs=1e-6)
    assert r.forward_tokens <= baseline.forward_tokens
    assert [h["best"] for h in r.history] == pytest.approx([h["best"] for h in baseline.history], abs=1e-6)


def test_statistical_racing_saves_tokens(model, baseline, tmp_path):
    r = search(model, None, small_config(), tmp_path, data=small_data(), progress=False)
    assert r.forward_tokens < baseline.forward_tokens
    assert r.fitness <= baseline.fitness + 0.02


def test_resume_finished_and_extend(model, baseline, tmp_path):
    config = small_config(racing=False, batch=1, generations=2)
    first = search(model, None, config, tmp_path, data=small_data(), progress=False)
    again = search(model, None, config, tmp_path, data=small_data(), progress=False, resume=True)
    assert again.genome == first.genome and again.evaluations == first.evaluations
    longer = search(
        model,
        None,
        small_config(racing=False, batch=1),
        tmp_path,
        data=small_data(),
        progress=False,
        resume=True,
    )  # more generations: continues to the same end as an uninterrupted run
    assert longer.genome == baseline.genome and longer.evaluations == baseline.evaluations


def test_state_file_protection(model, tmp_path):
    config = small_config(generations=0, population=4, parents=2)
    search(model, None, config, tmp_path, data=small_data(), progress=False)
    state = tmp_path / STATE_FILE
    before = state.read_bytes()
    with pytest.raises(LongRopeError, match="exists"):
        search(model, None, config, tmp_path, data=small_data(), progress=False)
    with pytest.raises(LongRopeError, match="different search"):
        search(
            model,
            None,
            small_config(generations=0, population=4, parents=2, seed=1),
            tmp_path,
            data=small_data(),
            progress=False,
            resume=True,
        )
    with pytest.raises(LongRopeError, match="different search"):
        search(model, None, config, tmp_path, data=small_data(seed=5), progress=False, resume=True)
    assert state.read_bytes() == before
    state.write_text("{ truncated")
    with pytest.raises(LongRopeError, match="corrupt"):
        search(model, None, config, tmp_path, data=small_data(), progress=False, resume=True)
    assert state.read_text() == "{ truncated"
    state.write_text(json.dumps({"hello": 1}))
    with pytest.raises(LongRopeError, match="not a longrope search state"):
        search(model, None, config, tmp_path, data=small_data(), progress=False, resume=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(population=0), "budget is zero"),
        (dict(max_evaluations=0), "budget is zero"),
        (dict(docs=0), "budget is zero"),
        (dict(factor=1.0), "above the model's original window"),
        (dict(factor=None, target_length=16), "above the model's original window"),
        (dict(split="test"), "test split"),
        (dict(parents=20), "cannot exceed"),
        # Types, from Python as from a file: never read as true, cut to an integer or taken as a number.
        (dict(racing="false"), r"racing is 'false' \(a string\); expected true or false"),
        (dict(generations=2.5), r"generations is 2.5 \(a number\); expected an integer"),
        (dict(seed=True), r"seed is true \(a boolean\); expected an integer"),
        (dict(population="8"), r"population is '8' \(a string\)"),
        (dict(dtype=3), r"dtype is 3 \(an integer\); expected a string or null"),
    ],
)
def test_bad_input(model, tmp_path, overrides, message):
    with pytest.raises(LongRopeError, match=message):
        search(model, None, small_config(**overrides), tmp_path, data=small_data(), progress=False)
    assert not (tmp_path / STATE_FILE).exists()


def test_path_and_dtype_objects_are_accepted_where_files_give_strings():
    import torch

    from longrope.search.evolution import SearchConfig

    SearchConfig(factor=2, corpus=Path("docs"), factor_file=Path("f.json"), dtype=torch.float32).validate()


def test_wrong_length_factor_file(model, tmp_path):
    bad = tmp_path / "factors.json"
    bad.write_text(json.dumps([1.0, 2.0, 3.0]))
    with pytest.raises(LongRopeError, match="3 factors but the model has 8"):
        search(
            model,
            None,
            small_config(factor_file=str(bad)),
            tmp_path / "out",
            data=small_data(),
            progress=False,
        )


def test_options_attention_nhat_longrope2_budget(model, tmp_path):
    config = small_config(
        search_attention=True, search_n_hat=True, longrope2=True, critical_pair=3, max_evaluations=20
    )
    r = search(model, None, config, tmp_path, data=small_data(), progress=False)
    assert r.evaluations == 20
    assert r.spec.attention_factor is not None and 1.0 <= r.spec.attention_factor <= 1.6
    assert all(4.0 <= v <= 8.0 for v in r.spec.long_factor[3:])
    assert r.spec.long_factor[0] == 1.0


def test_search_short(model, baseline, tmp_path):
    data = small_data(length=16)
    r = search_short(
        model, None, baseline.spec, small_config(generations=1), tmp_path, data=data, progress=False
    )
    assert r.spec.long_factor == baseline.spec.long_factor and len(r.spec.short_factor) == 8
    assert r.fitness <= r.seeds["none"]
    with pytest.raises(LongRopeError, match="original window"):
        search_short(
            model, None, baseline.spec, small_config(), tmp_path / "x", data=small_data(), progress=False
        )


def test_small_racing_rank_keeps_dropped_children_as_estimated_parents(model, tmp_path):
    """Racing for the best only drops most children early; with estimated parents the dropped ones still fill
    the parent set by their predicted fitness (so it stays `parents` strong), and the best is fully scored."""
    aggressive = dict(racing_rank=1, racing_z=0.0)  # drop whenever the predicted fitness is behind the best
    r = search(model, None, small_config(**aggressive), tmp_path / "est", data=small_data(), progress=False)
    state = json.loads((tmp_path / "est" / STATE_FILE).read_text())
    records = state["records"]
    parents = [records[k] for k in state["parents"]]
    assert len(parents) == 6
    assert any(not p["complete"] and p["estimate"] is not None for p in parents)
    assert parents[0]["complete"]  # the racing reference and the best: fully scored
    assert r.fitness == min(x["fitness"] for x in records.values() if x["complete"])
    search(model, None, small_config(**aggressive, estimated_parents=False), tmp_path / "narrow", data=small_data(),
           progress=False)
    narrow = json.loads((tmp_path / "narrow" / STATE_FILE).read_text())
    assert all(narrow["records"][k]["complete"] for k in narrow["parents"])


def test_portable_search_scores_one_table_with_the_in_window_penalty(tmp_path):
    """Every candidate uses its long factors as short ones too; complete ones pay w * max(0, NLL_in - base)."""
    from search_helpers import WINDOW, small_config, small_data, small_model

    from longrope.rope import NoScaling
    from longrope.search.fitness import Evaluator, PenalizedEvaluator

    model, data, inside = small_model(), small_data(), small_data(docs=2, length=WINDOW, seed=1)
    result = search(model, None, small_config(generations=1, portable=True, portable_weight=2.0), tmp_path,
                    data=data, in_window=inside, progress=False)
    assert result.spec.short_factor == result.spec.long_factor
    rows = [json.loads(line) for line in (tmp_path / "evaluations.jsonl").read_text().splitlines()]
    complete = [r for r in rows if r["complete"]]
    assert complete and all("in_window_penalty" in r for r in complete)

    plain, inner = Evaluator(model, data, batch=3), Evaluator(model, inside, batch=3)
    base = inner.evaluate([NoScaling()])[0].fitness
    for row in complete[:3]:
        factors = tuple(v / 100 for v in row["genome"]["factors"])
        spec = LongRopeSpec(long_factor=factors, short_factor=factors, factor=4.0, original_window=WINDOW)
        long_part = plain.evaluate([spec])[0].fitness
        penalty = 2.0 * max(0.0, inner.evaluate([spec])[0].fitness - base)
        assert row["in_window_penalty"] == pytest.approx(penalty, abs=2e-6)
        assert row["fitness"] == pytest.approx(long_part + penalty, abs=4e-6)
    penalized = PenalizedEvaluator(model, data, inside, weight=0.0, batch=3)
    assert penalized.evaluate([spec])[0].fitness == pytest.approx(long_part, abs=2e-6)


def test_settings_that_are_off_do_not_change_a_states_hash():
    """States written before the portable settings existed still resume."""
    from search_helpers import small_config

    assert "portable" not in small_config().hashed()
    assert small_config(portable=True).hashed()["portable_weight"] == 1.0


def test_longrope2_with_the_critical_pair_searched(model, tmp_path):
    """The published LongRoPE2 space end to end: every genome carries its critical pair, the result too."""
    from longrope.attention.patch import model_geometry

    config = small_config(longrope2=True, search_critical=True, generations=1)
    assert config.hashed()["search_critical"] is True and "search_critical" not in small_config().hashed()
    r = search(model, None, config, tmp_path, data=small_data(), progress=False)
    candidates = model_geometry(model).critical_candidates
    assert r.genome.critical in candidates
    c = r.genome.critical
    assert all(4.0 <= v <= 8.0 for v in r.spec.long_factor[c:])
    rows = [json.loads(line) for line in r.log_path.read_text().splitlines()]
    assert all(row["genome"]["critical"] in candidates for row in rows)
    with pytest.raises(LongRopeError, match="part of LongRoPE2"):
        small_config(search_critical=True).validate()


def test_a_fixed_attention_factor_reaches_every_candidate_and_excludes_searching_it(model, tmp_path):
    config = small_config(attention_factor=1.35, generations=1)
    r = search(model, None, config, tmp_path, data=small_data(), progress=False)
    assert r.spec.attention_factor == 1.35
    with pytest.raises(LongRopeError, match="give one of them"):
        small_config(attention_factor=1.35, search_attention=True).validate()


# -- two objectives: document perplexity and needle-driven perplexity ------------------------------------------


@pytest.fixture(scope="module")
def two(model, tmp_path_factory):
    """A two-objective search without racing, and its output directory."""
    from search_helpers import small_needle_data

    out = tmp_path_factory.mktemp("two")
    config = small_config(objective="ppl+needle", racing=False, generations=2)
    return search(model, None, config, out, data=small_needle_data(), progress=False), out


def test_two_objective_scores_both_from_one_forward(model):
    """Each document is one forward per candidate; its two NLLs are the masked means of that forward's NLL."""
    from search_helpers import small_needle_data

    from longrope.attention.patch import apply, restore
    from longrope.loss import token_nll
    from longrope.rope import YarnSpec
    from longrope.search.fitness import Evaluator

    data = small_needle_data()
    spec = YarnSpec(factor=4.0)
    evaluator = Evaluator(model, data, batch=2)
    result = evaluator.evaluate([spec])[0]
    assert evaluator.forward_tokens == data.docs * data.length  # the same tokens as one objective
    apply(model, spec)
    try:
        nll = token_nll(model, data.input_ids).double()
    finally:
        restore(model)
    for j in range(data.docs):
        assert result.per_doc[j] == pytest.approx(nll[j][data.score_mask[j]].mean().item(), abs=2e-6)
        assert result.needle_per_doc[j] == pytest.approx(nll[j][data.needle_mask[j]].mean().item(), abs=2e-6)
    assert result.needle == pytest.approx(sum(result.needle_per_doc) / data.docs, abs=1e-6)


def test_two_objective_search_writes_the_front_and_ships_the_rules_pick(two):
    from longrope.search.pareto import choose, dominates

    result, out = two
    front = json.loads((out / "front.json").read_text())
    assert (out / "front.png").stat().st_size > 1000
    assert set(front["baselines"]) == {"none", "pi", "ntk", "dynamic_ntk", "yarn"}
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    points = {json.dumps(r["genome"]): (r["fitness"], r["needle"]) for r in rows if r["complete"]}
    members = [(m["fitness"], m["needle"]) for m in front["members"]]
    expected = sorted(p for p in set(points.values()) if not any(dominates(q, p) for q in points.values()))
    assert sorted(set(members)) == expected  # exactly the non-dominated evaluations
    baselines = {n: (v["fitness"], v["needle"]) for n, v in front["baselines"].items()}
    choice = choose(members, baselines)
    assert front["chosen"] == front["members"][choice.index] and front["selection"] == choice.reason
    assert (result.fitness, result.needle) == members[choice.index]
    assert load_spec(result.spec_path).to_dict() == front["chosen"]["spec"]
    summary = json.loads((out / "result.json").read_text())
    assert summary["selection_rule"].startswith("lowest document perplexity among the front members")
    assert summary["config"]["objective"] == "ppl+needle"
    assert all("best_needle" in h for h in result.history)
    data_tokens = 3 * 64
    assert front["baseline_tokens"] == 5 * data_tokens  # counted apart from the search's own
    assert result.forward_tokens == sum(r["tokens"] for r in rows)


def test_two_objectives_cost_no_more_forward_tokens_than_one(model, two, tmp_path):
    """Same budget, no racing: the same evaluations, each one forward per document, whatever the objective."""
    one = search(model, None, small_config(racing=False, generations=2), tmp_path, data=small_data(), progress=False)
    result, _ = two
    assert result.evaluations == one.evaluations and result.forward_tokens == one.forward_tokens


def test_two_objective_racing_drops_only_dominated_children(model, two, tmp_path):
    """Exact racing with rank = parents keeps NSGA-II's selection: the same parents and front as without racing."""
    from search_helpers import small_needle_data

    result, out = two
    raced = search(model, None, small_config(objective="ppl+needle", racing_z=None, racing_rank=6, generations=2),
                   tmp_path, data=small_needle_data(), progress=False)
    assert raced.forward_tokens <= result.forward_tokens
    plain_state = json.loads((out / STATE_FILE).read_text())
    raced_state = json.loads((tmp_path / STATE_FILE).read_text())
    assert raced_state["parents"] == plain_state["parents"]
    assert [(m["fitness"], m["needle"]) for m in raced.front] == [(m["fitness"], m["needle"]) for m in result.front]


def test_two_objective_search_resumes_after_an_interruption(model, two, tmp_path, monkeypatch):
    from search_helpers import small_needle_data

    from longrope.search import fitness

    result, _ = two
    config = small_config(objective="ppl+needle", racing=False, generations=2)
    original, calls = fitness.Evaluator.evaluate, {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(fitness.Evaluator, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search(model, None, config, tmp_path, data=small_needle_data(), progress=False)
    monkeypatch.setattr(fitness.Evaluator, "evaluate", original)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert 0 < len(state["records"]) < result.evaluations and not state["done"]
    resumed = search(model, None, config, tmp_path, data=small_needle_data(), progress=False, resume=True)
    assert resumed.genome == result.genome and resumed.evaluations == result.evaluations
    assert resumed.front == result.front and resumed.baselines == result.baselines
    assert resumed.forward_tokens == result.forward_tokens
    again = search(model, None, config, tmp_path, data=small_needle_data(), progress=False, resume=True)
    assert again.front == result.front  # finished: nothing evaluated again, baselines included
    with pytest.raises(LongRopeError, match="different search"):  # the two-objective settings are hashed
        search(model, None, small_config(objective="ppl+needle", needles_per_doc=2, racing=False, generations=2),
               tmp_path, data=small_needle_data(), progress=False, resume=True)


def test_two_objective_settings_and_their_errors(model, tmp_path):
    from search_helpers import small_needle_data

    assert "objective" not in small_config().hashed() and "needles_per_doc" not in small_config().hashed()
    assert small_config(objective="ppl+needle").hashed()["needles_per_doc"] == 4
    cases = [
        (dict(objective="both"), "unknown objective"),
        (dict(objective="ppl+needle", needle=True), "exclude each other"),
        (dict(objective="ppl+needle", portable=True), "one-objective search"),
        (dict(objective="ppl+needle", needles_per_doc=0), "needles_per_doc"),
    ]
    for overrides, message in cases:
        with pytest.raises(LongRopeError, match=message):
            small_config(**overrides).validate()
    with pytest.raises(LongRopeError, match="with planted needles"):
        search(model, None, small_config(objective="ppl+needle"), tmp_path, data=small_data(), progress=False)
    with pytest.raises(LongRopeError, match="without planted needles"):
        search(model, None, small_config(), tmp_path, data=small_needle_data(), progress=False)
    long = LongRopeSpec(long_factor=(4.0,) * 8, factor=4.0, original_window=16)
    with pytest.raises(LongRopeError, match="with planted needles"):
        search_short(model, None, long, small_config(objective="ppl+needle"), tmp_path, data=small_data(length=16),
                     progress=False)


def test_two_objective_short_factors_race_the_model_as_it_was_and_the_long_factors(model, baseline, tmp_path):
    """Inside the window the rivals on the front are no scaling and the long spec unchanged; the shipped member
    keeps the long factors and, where any member reaches the better rival's needle NLL, is one of those."""
    from search_helpers import small_needle_data

    data = small_needle_data(length=16, answer=2)
    r = search_short(model, None, baseline.spec, small_config(objective="ppl+needle", generations=2), tmp_path,
                     data=data, progress=False)
    assert set(r.baselines) == {"none", "long_factors"}
    assert r.spec.long_factor == baseline.spec.long_factor and len(r.spec.short_factor) == 8
    best_rival = min(needle for _, needle in r.baselines.values())
    chosen = next(row for row in r.front if row["chosen"])
    reached = [row for row in r.front if row["needle"] <= best_rival]
    assert reached and chosen["needle"] <= best_rival
    assert chosen["fitness"] == min(row["fitness"] for row in reached)
    assert json.loads((tmp_path / "front.json").read_text())["baselines"].keys() == r.baselines.keys()


def test_the_long_factors_rival_of_a_short_factor_search_uses_them_inside_the_window():
    """Inside its window a LongRoPE spec switches to its short factors (plain RoPE when it has none), so the rival
    named "long_factors" must carry its long factors as short ones or it is the all-ones member again."""
    from longrope.rope import RopeGeometry
    from longrope.rope.frequencies import inv_freq_for
    from longrope.search.outputs import baseline_specs

    geometry = RopeGeometry(16, 10000.0, 16)
    long = LongRopeSpec(long_factor=(1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0, 5.0), factor=4.0, original_window=16)
    rival = baseline_specs(4.0, 16, long)["long_factors"]
    inside, _ = inv_freq_for(rival, geometry, seq_len=16)
    beyond, _ = inv_freq_for(long, geometry, seq_len=64)
    assert torch.equal(inside, beyond)
    assert not torch.equal(inside, inv_freq_for(long, geometry, seq_len=16)[0])


def test_a_forward_token_budget_caps_a_two_objective_search_at_a_one_objective_ones_cost(model, tmp_path):
    """Racing drops fewer children when they must be dominated on two objectives, so at the same evaluation budget
    a raced two-objective search may cost more tokens; ``max_forward_tokens`` makes the budget the tokens."""
    from search_helpers import small_needle_data

    one = search(model, None, small_config(generations=3), tmp_path / "one", data=small_data(), progress=False)
    capped = search(model, None, small_config(objective="ppl+needle", generations=3,
                                              max_forward_tokens=one.forward_tokens),
                    tmp_path / "two", data=small_needle_data(), progress=False)
    assert capped.forward_tokens <= one.forward_tokens
    assert "max_forward_tokens" not in small_config(max_forward_tokens=5).hashed()  # a budget, like max_evaluations
    state = json.loads((tmp_path / "two" / STATE_FILE).read_text())
    assert state["done"] and len(state["records"]) == capped.evaluations
    more = search(model, None, small_config(objective="ppl+needle", generations=3), tmp_path / "two",
                  data=small_needle_data(), progress=False, resume=True)  # the cap lifted: it continues
    assert more.forward_tokens >= capped.forward_tokens
