"""Issue 14, claims 2 and 3 (and PoSE) on the built-in tiny model: the shipped progressive plan
(`src/longrope/plans/tiny.toml`: search 4x -> fine-tune at 1024 -> search 16x -> short factors), PI and YaRN
fine-tuned with the same budget, and plan variants that change only the fine-tuning stage. Searches read the
validation split, fine-tuning the train split; every figure is on the test split (`compare_extension`: 20 files,
40 passkey trials with the `code` template, evaluation seed 7, which no search or fine-tune uses; `--eval-seed N`
draws other documents and prompts). Resumable: re-running skips finished stages and comparisons.

    python notes/experiments/progressive.py OUT [VARIANT ...] [--eval-seed N]

Variants: shipped (the plan shipped now), plain, pose, mixed, mixed10, mixed20, mixed30, mixed30-whole,
mixed10-two, mixed30-two (16x search with both objectives), mixed10-both, mixed30-both (short factors too),
mixed30-lr2-two (mixed30-two, fine-tuned at lr 2e-4).

Issue 30 (the share of short tokens in LongRoPE2's mixed context-window training): ``mixed10``/``20``/``30`` are
the plan shipped until 2026-12-07 (`tiny-plan-2026-11-26.toml`, with its retrieval mixture, in both parts) with
``mixed = true``, that share of short tokens and ``short_documents = "cut"`` (every train document cut into pieces
of at most 256 tokens: the stdlib has only 18k tokens of documents that fit whole); ``mixed30-whole`` packs only
whole short documents (LongRoPE2's own rule).
YaRN is fine-tuned with exactly the variant's stage-2 settings (mixed included): the same budget and data.
"""

import argparse
import json
import shutil
import time
import tomllib
from pathlib import Path

from longrope.models.loading import load_model
from longrope.recipes import extend
from longrope.recipes.compare import compare_extension
from longrope.recipes.plan import default_plan_path
from longrope.rope import LinearSpec, YarnSpec
from longrope.train import FinetuneConfig, finetune

EVAL = {"docs": 20, "trials": 40, "seed": 7}
# The variants below were measured as changes of the plan shipped until 2026-12-07 (perplexity-only searches, no
# mixing); "shipped" is the plan shipped now (`src/longrope/plans/tiny.toml`).
SHIPPED = default_plan_path().read_text()
BEFORE = (Path(__file__).parent / "tiny-plan-2026-11-26.toml").read_text()
RETRIEVAL = next(line for line in BEFORE.splitlines(keepends=True) if line.startswith("retrieval_fraction"))
PLAIN = BEFORE.replace(RETRIEVAL, "")  # the plan as first measured: plain train-split code only
FINETUNE = 'batch_size = 4\n'  # the fine-tuning stage's line that the variants replace
VARIANTS = {
    # The shipped plan: 35% of the fine-tuning sequences are retrieval windows (the model's pre-training mixture).
    "shipped": SHIPPED,
    "plain": PLAIN,
    # PoSE: windows of 256 tokens whose positions skip through 1024, 4x the sequences: the same tokens.
    "pose": PLAIN.replace(FINETUNE, 'batch_size = 16\npose = true\ntarget_length = 1024\n', 1)
                 .replace("length = 1024\n", "length = 256\n", 1),
    # LongRoPE2's mixed context-window training: short documents with the original RoPE between long batches.
    "mixed": PLAIN.replace(FINETUNE, 'batch_size = 4\nmixed = true\nmixed_short_share = 0.5\n', 1),
    # ... as the paper mixes it (1:9 to 3:7 short to long tokens), on the shipped plan's data.
    **{f"mixed{round(100 * share)}{suffix}": BEFORE.replace(
        FINETUNE, f'batch_size = 4\nmixed = true\nmixed_short_share = {share}\nshort_documents = "{documents}"\n', 1)
       for share, documents, suffix in ((0.1, "cut", ""), (0.2, "cut", ""), (0.3, "cut", ""),
                                        (0.3, "whole", "-whole"))},
}
# Issue 30, item 1: the 16x search with both objectives (LongRoPE2 as published); the stages before it are the base
# variant's, so its finished search and fine-tune are reused (same fingerprints) and only the searches after them run.
SEARCH16 = "factor = 16\n"
TWO = {f"{base}-two": base for base in ("mixed30", "mixed10")}
VARIANTS.update({name: VARIANTS[base].replace(
    SEARCH16, SEARCH16 + 'objective = "ppl+needle"\nlongrope2 = true\nsearch_critical = true\n', 1)
    for name, base in TWO.items()})
# ... and the short factors too (their rivals: no scaling and the long factors); the first three stages are the
# "-two" variant's.
SHORT = 'kind = "search_short"\n'
BOTH = {f"{base}-both": f"{base}-two" for base in TWO.values()}
VARIANTS.update({name: VARIANTS[two].replace(SHORT, SHORT + 'objective = "ppl+needle"\n', 1)
                 for name, two in BOTH.items()})
# A fine-tune that starts below the built-in model's last pre-training learning rate (3e-4) instead of above it
# (5e-4): whether the window's perplexity (claim 3) is lost to the learning rate rather than to the factors.
LR = "lr = 5e-4\n"
VARIANTS["mixed30-lr2-two"] = VARIANTS["mixed30-two"].replace(LR, "lr = 2e-4\n", 1)
REUSED = {**{name: (base, ("01-search", "02-finetune")) for name, base in TWO.items()},
          **{name: (two, ("01-search", "02-finetune", "03-search")) for name, two in BOTH.items()},
          "mixed30-lr2-two": ("mixed30", ("01-search",))}
# Baselines fine-tuned with the same data as a variant's stage 2.
BASELINES = {"plain": ("pi", "yarn"), "shipped": ("yarn",),
             **{name: ("yarn",) for name in VARIANTS if name.startswith("mixed") and name != "mixed"}}


def fine_tuned_as(variant: str) -> str:
    """The variant whose fine-tune ``variant`` reuses (itself when it runs its own)."""
    while variant in REUSED and "02-finetune" in REUSED[variant][1]:
        variant = REUSED[variant][0]
    return variant


def baseline_finetunes(out: Path, variant: str) -> dict[str, Path]:
    """PI and YaRN at 4x fine-tuned with the variant's stage-2 settings (the same budget and data)."""
    dirs = {}
    specs = {"pi": LinearSpec(factor=4.0), "yarn": YarnSpec(factor=4.0)}
    stage = next(s for s in tomllib.loads(VARIANTS[variant])["stages"] if s["kind"] == "finetune")
    settings = {k: v for k, v in stage.items() if k != "kind"}
    for name in BASELINES.get(variant, ()):
        target = out / f"{name}-ft-{fine_tuned_as(variant)}"
        if not (target / "model").is_dir():
            start = time.perf_counter()
            model, tokenizer = load_model("tiny", dtype="float32")
            config = FinetuneConfig(**settings)
            finetune(model, tokenizer, specs[name], config, target, resume=True)
            print(f"{name} fine-tune ({variant}): {time.perf_counter() - start:.0f} s", flush=True)
        dirs[name] = target
    return dirs


def main(out: str, *variants: str, eval_seed: int = EVAL["seed"]) -> None:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    for variant in variants or tuple(VARIANTS):
        text = VARIANTS[variant]
        plan = root / f"{variant}.toml"
        plan.write_text(text)
        extend_dir = root / variant
        if variant in REUSED and not extend_dir.exists():
            source, stages = REUSED[variant]
            extend_dir.mkdir()
            for stage in stages:
                if (root / source / stage).is_dir():
                    shutil.copytree(root / source / stage, extend_dir / stage)
        start = time.perf_counter()
        extend(plan, extend_dir)
        print(f"{variant}: pipeline {time.perf_counter() - start:.0f} s", flush=True)
        if (extend_dir / "comparison.json").is_file():
            continue
        tuned = baseline_finetunes(root, variant)
        start = time.perf_counter()
        compare_extension(extend_dir, tuned.get("pi"), tuned.get("yarn"), **{**EVAL, "seed": eval_seed})
        print(f"{variant}: comparison {time.perf_counter() - start:.0f} s", flush=True)
        print((extend_dir / "comparison.md").read_text(), flush=True)
    print(json.dumps({v: str(root / v / "comparison.md") for v in variants or VARIANTS}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Issue 14/30 progressive-plan variants and their comparison.")
    parser.add_argument("out")
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help="default: all")
    # Another evaluation seed: documents and prompts that no earlier choice saw.
    parser.add_argument("--eval-seed", type=int, default=EVAL["seed"])
    args = parser.parse_args()
    if unknown := [v for v in args.variants if v not in VARIANTS]:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    main(args.out, *args.variants, eval_seed=args.eval_seed)
