"""The demo's fitted budget (`fit_budget`): unchanged where the machine is fast enough, within the limit where
it is not, never below its floors."""

from __future__ import annotations

import pytest

from longrope.recipes.demo import (MIN_EVAL_DOCS, MIN_TRIALS, DemoSettings, DemoTimings, estimate_seconds,
                                   fit_budget)

LENGTHS = [256, 512, 1024, 2048]


def _seconds(per_2048: float) -> DemoTimings:
    """Timings shaped like the AVX-512-bf16 EPYC's (2026-12-07): a batched search row 0.75x a batch-1 forward,
    a decoding step ~1% of a 2048-token forward."""
    return DemoTimings({n: per_2048 * (n / 2048) ** 1.3 for n in LENGTHS}, 0.75 * per_2048, 0.01 * per_2048)


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


def test_the_estimate_follows_what_each_part_runs():
    """Search: planned rows at the batched row cost; passkey: two forwards per trial and length plus the decoding
    steps; doubling one timing moves only the parts that use it."""
    settings = DemoSettings()
    base = _seconds(0.3)
    estimate = estimate_seconds(settings, base, LENGTHS)
    slower_search = estimate_seconds(settings, DemoTimings(base.forward, 2 * base.search_row, base.decode), LENGTHS)
    assert slower_search["search"] == pytest.approx(2 * estimate["search"])
    assert slower_search["perplexity"] == estimate["perplexity"] and slower_search["passkey"] == estimate["passkey"]
    slower_decode = estimate_seconds(settings, DemoTimings(base.forward, base.search_row, 2 * base.decode), LENGTHS)
    assert slower_decode["search"] == estimate["search"] and slower_decode["perplexity"] == estimate["perplexity"]
    assert slower_decode["passkey"] > estimate["passkey"]
    forwards = sum(base.forward.values())
    assert estimate["passkey"] > 2 * 6 * settings.passkey_trials * forwards  # prompt and answer forwards, then decoding
