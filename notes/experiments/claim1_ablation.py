"""Issue 14, claim 1 (8x with no fine-tuning) on the built-in tiny model: one row per search lever, 3 search
seeds each, against PI / NTK / dynamic NTK / YaRN. Searches read the validation split; every figure reported
is on the test split (20 files cut to 2048 and 256 tokens; passkey `code` template, 20 trials at 2048), with an
evaluation seed that no search uses. Resumable: finished rows are kept in OUT/rows.jsonl.

    python notes/experiments/claim1_ablation.py OUT [LEVER ...]
"""

import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

from longrope.eval.passkey import evaluate_passkey
from longrope.eval.perplexity import evaluate_ppl
from longrope.models.loading import load_model
from longrope.recipes.demo import demo_search
from longrope.rope import DynamicNTKSpec, LinearSpec, NTKSpec, YarnSpec
from longrope.search import search

SEEDS = (0, 1, 2)
EVAL_SEED = 7            # documents and keys of the test evaluation; no search uses it
LENGTHS = (256, 2048)
DOCS, TRIALS = 20, 20

base = demo_search()
LEVERS = {
    "demo defaults (192 evals, 4 docs)": base,
    "budget x2 (20 generations)": dataclasses.replace(base, generations=20),
    "attention factor searched": dataclasses.replace(base, search_attention=True),
    "n_hat searched": dataclasses.replace(base, search_n_hat=True),
    "LongRoPE2 critical dimension": dataclasses.replace(base, longrope2=True),
    "needle-driven fitness": dataclasses.replace(base, needle=True),
    "8 fitness docs": dataclasses.replace(base, docs=8),
    "2 fitness docs": dataclasses.replace(base, docs=2),
}


def evaluate(model, tokenizer, specs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ppl = evaluate_ppl(model, tokenizer, specs, "stdlib", list(LENGTHS), n_docs=DOCS, split="test",
                           seed=EVAL_SEED, progress=False).ppl()
    passkey = evaluate_passkey(model, tokenizer, specs, [LENGTHS[-1]], trials=TRIALS, seed=EVAL_SEED,
                               template="code", progress=False).accuracy()
    return {name: {"ppl": ppl[name], "passkey": passkey[name]} for name in specs}


def main(out: str, *only: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_path = out_dir / "rows.jsonl"
    done = {(r["lever"], r["seed"]) for r in map(json.loads, rows_path.read_text().splitlines())} \
        if rows_path.exists() else set()
    model, tokenizer = load_model("tiny", dtype="bf16")

    def write(row):
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    if ("baselines", None) not in done:
        start = time.perf_counter()
        specs = {"pi": LinearSpec(factor=8.0), "ntk": NTKSpec(factor=8.0), "dynamic_ntk": DynamicNTKSpec(factor=8.0),
                 "yarn": YarnSpec(factor=8.0)}
        write({"lever": "baselines", "seed": None, "results": evaluate(model, tokenizer, specs),
               "seconds": time.perf_counter() - start})
    for number, (lever, config) in enumerate(LEVERS.items()):
        if only and lever not in only and str(number) not in only:
            continue
        for seed in SEEDS:
            if (lever, seed) in done:
                continue
            start = time.perf_counter()
            found = search(model, tokenizer, dataclasses.replace(config, seed=seed),
                           out_dir / f"lever{number}-seed{seed}", resume=True, progress=True)
            seconds = time.perf_counter() - start
            result = evaluate(model, tokenizer, {"longrope": found.spec})["longrope"]
            write({"lever": lever, "seed": seed, "fitness": found.fitness, "evaluations": found.evaluations,
                   "forward_tokens": found.forward_tokens, "search_seconds": seconds, **result,
                   "spec": found.spec.to_dict()})


if __name__ == "__main__":
    main(*sys.argv[1:])
