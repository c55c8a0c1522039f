"""The demo's fitted budget (`fit_budget`): unchanged where the machine is fast enough, within the limit where
it is not, never below its floors."""

from __future__ import annotations

import pytest

from longrope.recipes.demo import MIN_EVAL_DOCS, MIN_TRIALS, DemoSettings, estimate_seconds, fit_budget

LENGTHS = [256, 512, 1024, 2048]


def _seconds(per_2048: float) -> dict[int, float]:
    return {n: per_2048 * (n / 2048) ** 1.3 for n in LENGTHS}


def test_a_fast_machine_runs_the_full_budget():
    settings = DemoSettings()
    budget = fit_budget(settings, _seconds(0.05), LENGTHS, limit=200)
    assert not budget.fitted and budget.settings == settings


@pytest.mark.parametrize("per_2048", [0.2, 0.33, 0.6])
def test_a_slow_machine_gets_a_budget_that_fits(per_2048):
    settings = DemoSettings()
    seconds = _seconds(per_2048)
    assert sum(estimate_seconds(settings, seconds, LENGTHS).values()) > 200
    budget = fit_budget(settings, seconds, LENGTHS, limit=200)
    fitted = budget.settings
    assert budget.fitted and sum(budget.estimate.values()) <= 200 * 1.05 or fitted.search.generations == 1
    assert 1 <= fitted.search.generations < settings.search.generations
    assert MIN_EVAL_DOCS <= fitted.eval_docs <= settings.eval_docs
    assert MIN_TRIALS <= fitted.passkey_trials <= settings.passkey_trials
    assert fitted.search.population == settings.search.population  # every seed is still scored
    assert budget.to_dict()["full_estimate_seconds"]["search"] > budget.to_dict()["estimate_seconds"]["search"]


def test_a_slower_machine_never_gets_a_larger_budget():
    small = fit_budget(DemoSettings(), _seconds(0.6), LENGTHS).settings
    large = fit_budget(DemoSettings(), _seconds(0.25), LENGTHS).settings
    assert small.search.generations <= large.search.generations
    assert small.eval_docs <= large.eval_docs
