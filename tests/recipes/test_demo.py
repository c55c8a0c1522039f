"""`longrope demo` end to end on the test-size tiny model with a small budget (the real run is in the README)."""

import json

from longrope.recipes.demo import DemoSettings, run_demo
from longrope.rope import LongRopeSpec, load_spec
from longrope.search import SearchConfig


def test_demo_writes_tables_json_and_plots(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGROPE_CACHE", str(tiny_model_dir.parent.parent))
    search = SearchConfig(factor=4, population=4, parents=2, mutations=2, crossovers=2, generations=1, docs=1)
    settings = DemoSettings(model=str(tiny_model_dir), search=search, eval_docs=2, passkey_trials=1, dtype="float32")
    result = run_demo(tmp_path / "demo", settings, progress=False)

    assert result.lengths == [64, 128, 256]
    assert set(result.ppl) == {"none", "pi", "ntk", "dynamic_ntk", "yarn", "longrope (searched)"}
    assert all(v > 1 for row in result.ppl.values() for v in row.values())
    assert 64 not in result.passkey["none"]  # the prompt does not fit in 64 tokens: skipped, not failed
    assert set(result.passkey["none"]) == {128, 256}
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert summary["search_evaluations"] >= 4
    assert isinstance(load_spec(tmp_path / "demo" / "search" / "best_spec.json"), LongRopeSpec)
    for name in ("demo.md", "ppl/ppl.png", "ppl/ppl.json", "passkey/passkey.json", "search/convergence.png"):
        assert (tmp_path / "demo" / name).is_file(), name
