"""Benchmark: the plain LongRoPE evolutionary search against ours (racing + batching + bf16), same seed and budget.

    python benchmarks/bench_search.py            # built-in tiny model, 8x (2048 tokens), validation docs
    python benchmarks/bench_search.py --quick    # random tiny model and random tokens: seconds (run by a test)
    python benchmarks/bench_search.py --science  # + test-split perplexity of PI / NTK / YaRN / searched
    python benchmarks/bench_search.py --replay DIR/evaluations.jsonl --parents 4   # a plain run's log only

"Plain" is the reference algorithm: every candidate scored on every document, one candidate per forward, fp32.
"Ours" races candidates document by document, puts ``--batch`` candidates in one forward and runs in bf16.
Both bests are re-scored in fp32 on the search documents so the fitness comparison does not depend on the
forward dtype. Also printed: how many of the plain run's children the racing rule would have dropped
although they entered the parent set ("wrong drops"), replayed from the plain run's log.
Exit status: 0, or 1 on a sanity failure (non-finite fitness, a best worse than the best seed, no tokens
counted, or, with --strict, a missed target: ours must reach the plain fitness (+0.002 nats) with at most
half the forward tokens).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from longrope.attention.patch import apply, restore
from longrope.loss import token_nll
from longrope.rope import LinearSpec, NTKSpec, YarnSpec
from longrope.search import FitnessData, SearchConfig, search
from longrope.search.fitness import Evaluator, racing_rule
from longrope.search.state import STATE_FILE

TOLERANCE = 0.002  # nats: "equal" fitness


def random_model(window: int = 32, seed: int = 0):
    """A random 2-layer Llama (16 rotary pairs) with weights large enough for position effects to show."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=window,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
    return model.eval()


def random_data(docs: int, length: int, seed: int = 0) -> FitnessData:
    """Random documents with a repeated motif, so long-range positions matter a little."""
    g = torch.Generator().manual_seed(seed)
    motif = torch.randint(3, 97, (docs, 24), generator=g)
    ids = torch.randint(3, 97, (docs, length), generator=g)
    for start in range(1, length - 24, 96):
        ids[:, start : start + 24] = motif
    ids[:, 0] = 1
    return FitnessData(ids, None, f"{docs} random documents of {length} tokens")


def rescore(model, data: FitnessData, spec) -> float:
    """fp32 fitness of one spec on the search documents (no racing)."""
    model = model.float()
    return Evaluator(model, data, batch=1).evaluate([spec])[0].fitness


def log_generations(log_path: Path) -> dict[int, list[dict]]:
    """The rows of a search's evaluations.jsonl, by generation, in log order."""
    generations: dict[int, list[dict]] = {}
    for line in log_path.read_text().splitlines():
        row = json.loads(line)
        generations.setdefault(row["generation"], []).append(row)
    return generations


def best_of(rows: list[dict], parents: int) -> list[dict]:
    return sorted(rows, key=lambda r: (r["fitness"], r["order"]))[:parents]


def replay_wrong_drops(log_path: Path, parents: int, rank: int, z: float | None) -> tuple[int, int, int, int, float]:
    """Replay the racing rule on a plain run's log, generation by generation, children only.

    Returns (children the rule would drop, of which entered the top ``rank`` (wrong drops), children that
    entered the parent set, children, the children's document scorings the rule needs / all of them). The
    plain run scored every child fully, so this shows the rule's decisions on the reference trajectory.
    """
    generations = log_generations(log_path)
    ranked = best_of(generations.get(0, []), parents)
    dropped = wrong = entered = total = scored = docs = 0
    for generation in sorted(generations)[1:]:
        rule = racing_rule([(r["fitness"], r["per_doc"]) for r in ranked], z, min(rank, len(ranked)))
        for r in generations[generation]:
            k = len(r["per_doc"])
            total += 1
            docs += k
            entered += r["fitness"] < ranked[-1]["fitness"]
            looks = [n for n in range(1, k) if rule.drops(r["per_doc"][:n])]
            scored += looks[0] if looks else k
            if looks:
                dropped += 1
                wrong += r["fitness"] < rule.threshold
        ranked = best_of(ranked + generations[generation], parents)
    return dropped, wrong, entered, total, scored / max(docs, 1)


def trajectory_floor(log_path: Path, parents: int) -> tuple[float, int, int]:
    """The fewest document scorings any racing rule needs to follow a plain run's trajectory exactly.

    Such a rule must score fully every individual that is a parent when children are bred, and the final best
    (racing drops are decided on partial scores, selection on full ones), and at least one document of every
    other. Returns (that fraction of the plain run's scorings, individuals scored fully, individuals).
    """
    generations = log_generations(log_path)
    rows = [r for g in sorted(generations) for r in generations[g]]
    breeders: set[int] = set()
    ranked: list[dict] = []
    for generation in sorted(generations):
        ranked = best_of(ranked + generations[generation], parents)
        if generation < max(generations):
            breeders |= {r["order"] for r in ranked}
    breeders.add(ranked[0]["order"])
    needed = sum(len(r["per_doc"]) if r["order"] in breeders else 1 for r in rows)
    return needed / sum(len(r["per_doc"]) for r in rows), len(breeders), len(rows)


def print_replay(log_path: Path, parents: int, rank: int, z: float | None) -> None:
    """What racing would do on an existing plain run's log (no model needed)."""
    dropped, wrong, entered, total, share = replay_wrong_drops(log_path, parents, rank, z)
    floor, full, individuals = trajectory_floor(log_path, parents)
    print(
        f"racing replayed on the plain run's log: {entered} of {total} children entered the parent set; "
        f"the rule drops {dropped}, {wrong} of them wrongly (they entered the top {rank}); it scores "
        f"{share:.3f} of the children's documents"
    )
    print(
        f"trajectory floor: following the plain run exactly needs {full} of {individuals} individuals scored "
        f"fully and one document of each other: {floor:.3f} of the plain run's forward tokens at best"
    )


def test_perplexity(model, tokenizer, specs: dict, length: int, docs: int) -> dict[str, float]:
    """Truncate-mode perplexity on ``docs`` TEST documents (evaluation only), fp32 model, bf16 not used."""
    from longrope.data.corpus import StdlibCorpus
    from longrope.data.samples import token_samples

    samples = token_samples(
        StdlibCorpus("test"), tokenizer, min_tokens=length, n=docs, seed=0, allow_fewer=True
    )
    out = {}
    model = model.float()
    for name, spec in specs.items():
        total, count = 0.0, 0
        for sample in samples:
            if spec is not None:
                apply(model, spec)
            with torch.no_grad():
                nll = token_nll(model, sample[None])
            restore(model)
            total += nll.sum().item()
            count += nll.numel()
        out[name] = math.exp(total / count)
    out["_docs"] = len(samples)
    return out


def compare(model, tokenizer, data, args, budget: dict, z, seed: int, out: Path, failures: list[str]) -> dict:
    """Plain and ours with search seed ``seed``; prints their table; returns the runs and the ratios."""
    base = SearchConfig(factor=args.factor, seed=seed, search_attention=args.attention, **budget)
    plain_config = replace(base, racing=False, batch=1, dtype=None)
    ours_config = replace(base, racing=True, racing_z=z, racing_rank=args.rank, batch=args.batch,
                          dtype=args.ours_dtype, estimated_parents=not args.no_estimated_parents)
    rank = ours_config.race_rank
    estimated = "-est" if ours_config.estimated_parents else ""
    subdirs = {"plain": "plain", "ours": f"ours-z{z}-rank{rank}-batch{args.batch}-{args.ours_dtype}{estimated}"}
    if not args.resume:
        for sub in subdirs.values():
            shutil.rmtree(out / sub, ignore_errors=True)
    runs: dict = {}
    for name in ("ours",) if args.skip_plain else ("plain", "ours"):
        config = plain_config if name == "plain" else ours_config
        resume = args.resume and (out / subdirs[name] / STATE_FILE).exists()
        started = time.perf_counter()
        result = search(model, tokenizer, config, out / subdirs[name], data=data, progress=False, resume=resume)
        runs[name] = (result, result.seconds if resume else time.perf_counter() - started)

    print(f"\nsearch seed {seed} (racing rank {rank})")
    print(f"{'run':<6} {'best (search)':>13} {'best (fp32)':>12} {'ppl':>9} {'evals':>6} {'fwd tokens':>12} "
          f"{'wall s':>8}")
    rescored = {}
    for name, (result, wall) in runs.items():
        rescored[name] = rescore(model, data, result.spec)
        print(
            f"{name:<6} {result.fitness:>13.4f} {rescored[name]:>12.4f} {math.exp(rescored[name]):>9.3f} "
            f"{result.evaluations:>6} {result.forward_tokens:>12,} {wall:>8.1f}"
        )
        if not math.isfinite(result.fitness) or result.forward_tokens <= 0:
            failures.append(f"{name}: non-finite fitness or no tokens counted")
        if result.seeds and result.fitness > min(result.seeds.values()) + 1e-9:
            failures.append(f"{name}: best {result.fitness} worse than the best seed {min(result.seeds.values())}")
    if "plain" in runs:
        (plain, plain_wall), (ours, ours_wall) = runs["plain"], runs["ours"]
        ratios = {"tokens": ours.forward_tokens / plain.forward_tokens, "wall": ours_wall / plain_wall,
                  "gap": rescored["ours"] - rescored["plain"]}
        print(
            f"ratios ours/plain: forward tokens {ratios['tokens']:.3f}, wall time {ratios['wall']:.3f}, "
            f"fitness difference (fp32) {ratios['gap']:+.4f} nats"
        )
        print_replay(plain.log_path, base.parents, rank, z)
        runs["_ratios"] = ratios
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="random tiny model, seconds")
    parser.add_argument("--model", default="tiny", help="model for the full run (default: the built-in tiny)")
    parser.add_argument("--science", action="store_true", help="also test-split perplexity of every method")
    parser.add_argument("--strict", action="store_true", help="a missed target is a failure too")
    parser.add_argument("--skip-plain", action="store_true", help="only run ours (with --science)")
    parser.add_argument("--factor", type=float, default=8.0)
    parser.add_argument("--population", type=int, default=None)
    parser.add_argument("--parents", type=int, default=None)
    parser.add_argument("--mutations", type=int, default=None)
    parser.add_argument("--crossovers", type=int, default=None)
    parser.add_argument("--generations", type=int, default=None)
    parser.add_argument("--docs", type=int, default=None)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-estimated-parents", action="store_true",
                        help="dropped children never become parents (the selection of plain racing)")
    parser.add_argument("--ours-dtype", default="bf16", choices=["bf16", "fp32"], help="forward dtype of ours")
    parser.add_argument("--z", type=float, default=None,
                        help="racing z (default: SearchConfig's; negative: exact racing)")
    parser.add_argument("--rank", type=int, default=None, help="racing rank (default: SearchConfig's)")
    parser.add_argument("--attention", action="store_true", help="also search the attention factor")
    parser.add_argument("--test-docs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="first search seed")
    parser.add_argument("--seeds", type=int, default=1, help="search seeds to compare (same documents)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="keep outputs here (default: a temp dir)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in --out and resume them (a finished run is read back, with the "
                             "wall time it recorded): compare several settings of ours against one plain run")
    parser.add_argument("--replay", type=Path, default=None, metavar="LOG",
                        help="only replay racing on this plain run's evaluations.jsonl (with --parents, --rank, --z)")
    args = parser.parse_args()
    z = SearchConfig.racing_z if args.z is None else (None if args.z < 0 else args.z)
    if args.replay:
        parents = args.parents or SearchConfig.parents
        rank = args.rank or replace(SearchConfig(), parents=parents).race_rank
        print_replay(args.replay, parents, rank, z)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.quick:
        model, tokenizer, window = random_model(), None, 32
        length = int(window * args.factor)
        defaults = dict(population=16, parents=8, mutations=8, crossovers=8, generations=4, docs=4)
    else:
        from longrope.models.loading import load_model

        model, tokenizer = load_model(args.model, dtype="float32")
        window = model.config.max_position_embeddings
        length = int(window * args.factor)
        defaults = dict(population=32, parents=16, mutations=8, crossovers=8, generations=8, docs=5)
    budget = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    if args.quick:
        data = random_data(budget["docs"], length)
    else:
        from longrope.search.fitness import build_fitness_data

        data = build_fitness_data(tokenizer, length, budget["docs"], split="validation", seed=0)

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-search-"))
    seeds = [args.seed + i for i in range(args.seeds)]
    print(
        f"model: {'random tiny' if args.quick else args.model} window {window}, target {length} tokens "
        f"({args.factor:g}x), {budget}, batch {args.batch}, racing z {z}, search seeds {seeds} (same documents)"
    )
    failures: list[str] = []
    summary, runs = [], {}
    for seed in seeds:
        runs = compare(model, tokenizer, data, args, budget, z, seed, out / f"seed{seed}", failures)
        if "_ratios" in runs:
            summary.append(runs.pop("_ratios"))
    if summary:
        token_ratio = sum(r["tokens"] for r in summary) / len(summary)
        wall_ratio = sum(r["wall"] for r in summary) / len(summary)
        gap = sum(r["gap"] for r in summary) / len(summary)
        per_seed = ", ".join(f"{r['gap']:+.4f}" for r in summary)
        print(
            f"\nSUMMARY over {len(summary)} seed(s): forward tokens ours/plain {token_ratio:.3f} (mean), wall time "
            f"{wall_ratio:.3f}, best fitness ours - plain {gap:+.4f} nats (mean; per seed {per_seed}); ours equal "
            f"or better (within {TOLERANCE}) in {sum(r['gap'] <= TOLERANCE for r in summary)} of {len(summary)}"
        )
        met = gap <= TOLERANCE and token_ratio <= 0.5
        verdict = "MET" if met else "MISSED"
        print(f"target (best fitness equal or better on average, at most half the tokens): {verdict}")
        if args.strict and not met:
            failures.append("target missed")

    if args.science and not args.quick:
        specs = {
            "none": None,
            "pi": LinearSpec(factor=args.factor),
            "ntk": NTKSpec(factor=args.factor),
            "yarn": YarnSpec(factor=args.factor),
        }
        for name, (result, _) in runs.items():
            specs[f"search-{name}"] = result.spec
        table = test_perplexity(model, tokenizer, specs, length, args.test_docs)
        print(
            f"\nTEST split perplexity at {length} tokens ({args.factor:g}x), {table.pop('_docs')} documents, "
            "truncate mode, fp32, no fine-tuning (the last seed's searches):"
        )
        for name, value in table.items():
            print(f"  {name:<14} {value:8.2f}")
        (out / "science.json").write_text(json.dumps(table, indent=2))
    print(f"\noutputs: {out}")
    for failure in failures:
        print(f"SANITY FAILURE: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
