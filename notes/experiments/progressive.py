"""Issue 14, claims 2 and 3 (and PoSE) on the built-in tiny model: the shipped progressive plan
(`src/longrope/plans/tiny.toml`: search 4x -> fine-tune at 1024 -> search 16x -> short factors), PI and YaRN
fine-tuned with the same budget, and plan variants that change only the fine-tuning stage. Searches read the
validation split, fine-tuning the train split; every figure is on the test split (`compare_extension`: 20 files,
20 passkey trials with the `code` template, evaluation seed 7, which no search or fine-tune uses).
Resumable: re-running skips finished stages and comparisons.

    python notes/experiments/progressive.py OUT [VARIANT ...]      # variants: shipped, plain, pose, mixed
"""

import json
import sys
import time
import tomllib
from pathlib import Path

from longrope.models.loading import load_model
from longrope.recipes import extend
from longrope.recipes.compare import compare_extension
from longrope.recipes.plan import default_plan_path
from longrope.rope import LinearSpec, YarnSpec
from longrope.train import FinetuneConfig, finetune

EVAL = {"docs": 20, "trials": 20, "seed": 7}
SHIPPED = default_plan_path().read_text()
RETRIEVAL = next(line for line in SHIPPED.splitlines(keepends=True) if line.startswith("retrieval_fraction"))
PLAIN = SHIPPED.replace(RETRIEVAL, "")  # the plan as first measured: plain train-split code only
SHIPPED_RETRIEVAL = tomllib.loads(RETRIEVAL)["retrieval_fraction"]  # the plan's value, for the baselines too
FINETUNE = 'batch_size = 4\n'  # the fine-tuning stage's line that the variants replace
VARIANTS = {
    # The shipped plan: 35% of the fine-tuning sequences are retrieval windows (the model's pre-training mixture).
    "shipped": SHIPPED,
    "plain": PLAIN,
    # PoSE: windows of 256 tokens whose positions skip through 1024, 4x the sequences: the same tokens.
    "pose": PLAIN.replace(FINETUNE, 'batch_size = 16\npose = true\ntarget_length = 1024\n', 1)
                 .replace("length = 1024\n", "length = 256\n", 1),
    # LongRoPE2's mixed context-window training: short documents with the original RoPE between long batches.
    "mixed": PLAIN.replace(FINETUNE, 'batch_size = 4\nmixed = true\n', 1),
}
# Baselines fine-tuned with the same data as a variant's stage 2.
BASELINES = {"plain": ("pi", "yarn"), "shipped": ("yarn",)}


def baseline_finetunes(out: Path, variant: str) -> dict[str, Path]:
    """PI and YaRN at 4x fine-tuned with the variant's stage-2 settings (the same budget and data)."""
    dirs = {}
    specs = {"pi": LinearSpec(factor=4.0), "yarn": YarnSpec(factor=4.0)}
    extra = {"retrieval_fraction": SHIPPED_RETRIEVAL} if variant == "shipped" else {}
    for name in BASELINES.get(variant, ()):
        target = out / f"{name}-ft-{variant}"
        if not (target / "model").is_dir():
            start = time.perf_counter()
            model, tokenizer = load_model("tiny", dtype="float32")
            config = FinetuneConfig(length=1024, steps=160, batch_size=4, schedule="linear", lr=5e-4,
                                    warmup_steps=10, save_every=40, **extra)
            finetune(model, tokenizer, specs[name], config, target, resume=True)
            print(f"{name} fine-tune ({variant}): {time.perf_counter() - start:.0f} s", flush=True)
        dirs[name] = target
    return dirs


def main(out: str, *variants: str) -> None:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    for variant in variants or tuple(VARIANTS):
        text = VARIANTS[variant]
        plan = root / f"{variant}.toml"
        plan.write_text(text)
        extend_dir = root / variant
        start = time.perf_counter()
        extend(plan, extend_dir)
        print(f"{variant}: pipeline {time.perf_counter() - start:.0f} s", flush=True)
        if (extend_dir / "comparison.json").is_file():
            continue
        tuned = baseline_finetunes(root, variant)
        start = time.perf_counter()
        compare_extension(extend_dir, tuned.get("pi"), tuned.get("yarn"), **EVAL)
        print(f"{variant}: comparison {time.perf_counter() - start:.0f} s", flush=True)
        print((extend_dir / "comparison.md").read_text(), flush=True)
    print(json.dumps({v: str(root / v / "comparison.md") for v in variants or VARIANTS}))


if __name__ == "__main__":
    main(*sys.argv[1:])
