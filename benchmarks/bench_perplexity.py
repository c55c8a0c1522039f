"""Perplexity speed and memory: ours (`longrope.eval.perplexity`, chunked output head) vs the naive
``model(input_ids, labels=input_ids).loss`` (full [tokens x vocab] logits), in the same run.

    python benchmarks/bench_perplexity.py            # built-in tiny model at 256..4096, SmolLM2 if installed
    python benchmarks/bench_perplexity.py --quick    # seconds, a random tiny model: the smoke test of the tests

Every measurement runs in a fresh ``spawn`` child process so its peak resident memory (``ru_maxrss``) is its
own; the table shows tokens/s, peak RSS and the RSS added over the loaded model, for bf16 and fp32, and the
ratios ours / naive. It also measures this CPU's matmul peak in each dtype and prints our forward's achieved FLOP/s as
a fraction of it. Exits non-zero if ours and the naive loss disagree in fp32 (relative error > 1e-3).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_flags, forward_flops, matmul_peak

QUICK_CONFIG = {"vocab_size": 8000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 128}

def _load(source: str, dtype_name: str):
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    if source == "random":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**QUICK_CONFIG)).to(dtype)
    else:
        from longrope.models.loading import load_model

        model, _ = load_model(source, dtype=dtype)
    return model.eval()


def _measure(source: str, dtype_name: str, method: str, length: int, repeats: int, threads: int) -> dict:
    """Runs in a fresh child: load, one warm-up, best of ``repeats``; returns time, loss and peak RSS."""
    import resource
    import time

    import torch

    from longrope.eval.perplexity import (
        perplexity,  # imported before the baseline: its code is not its memory
    )

    torch.set_num_threads(threads)
    model = _load(source, dtype_name)
    ids = torch.randint(3, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(length))
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    if method == "ours":
        def run() -> float:
            return perplexity(model, [ids[0]], mode="truncate", length=length, progress=False).mean_nll
    else:
        def run() -> float:
            with torch.no_grad():
                return float(model(input_ids=ids, labels=ids, use_cache=False).loss)

    loss = run()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": best, "loss": loss, "peak_mb": peak_kb / 1024, "added_mb": (peak_kb - baseline_kb) / 1024,
            "config": {k: getattr(model.config, k) for k in ("hidden_size", "num_attention_heads",
                                                              "num_key_value_heads", "head_dim", "intermediate_size",
                                                              "num_hidden_layers", "vocab_size")}}


def measure(source: str, dtype_name: str, method: str, length: int, repeats: int, threads: int,
            fresh_process: bool = True) -> dict:
    """One measurement, in a fresh spawn child (its own peak RSS) unless ``fresh_process`` is False."""
    if not fresh_process:
        result = _measure(source, dtype_name, method, length, repeats, threads)
        result["peak_mb"] = result["added_mb"] = math.nan  # shared process: RSS says nothing
        return result
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_measure, source, dtype_name, method, length, repeats, threads).result()


class _Config:
    def __init__(self, values: dict):
        self.__dict__.update(values)


def run_model(name: str, source: str, lengths: list[int], dtypes: list[str], repeats: int, threads: int,
              peaks: dict[str, float], fresh_process: bool = True) -> list[str]:
    """Measure one model; return the list of failed agreement checks."""
    failures = []
    print(f"\n{name}: tokens/s, peak RSS (MB), RSS added over the loaded model (MB)")
    print(f"{'dtype':>5} {'length':>6} | {'ours tok/s':>10} {'naive tok/s':>11} {'speed x':>7} | "
          f"{'ours MB':>8} {'naive MB':>8} | {'ours +MB':>8} {'naive +MB':>9} {'mem x':>6} | "
          f"{'rel err':>8} | {'GFLOP/s':>7} {'% peak':>6}")
    for dtype_name in dtypes:
        for length in lengths:
            ours = measure(source, dtype_name, "ours", length, repeats, threads, fresh_process)
            naive = measure(source, dtype_name, "naive", length, repeats, threads, fresh_process)
            rel = abs(ours["loss"] - naive["loss"]) / abs(naive["loss"])
            flops = forward_flops(_Config(ours["config"]), length) / ours["seconds"]
            mem_ratio = naive["added_mb"] / max(ours["added_mb"], 1.0) if fresh_process else math.nan
            print(f"{dtype_name:>5} {length:>6} | {length / ours['seconds']:>10.0f} {length / naive['seconds']:>11.0f} "
                  f"{naive['seconds'] / ours['seconds']:>7.2f} | {ours['peak_mb']:>8.0f} {naive['peak_mb']:>8.0f} | "
                  f"{ours['added_mb']:>8.0f} {naive['added_mb']:>9.0f} {mem_ratio:>6.1f} | {rel:>8.1e} | "
                  f"{flops / 1e9:>7.1f} {100 * flops / peaks[dtype_name]:>5.1f}%", flush=True)
            if dtype_name == "fp32" and rel > 1e-3:
                failures.append(f"{name} fp32 at {length}: ours {ours['loss']:.6f} vs naive {naive['loss']:.6f}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a random tiny model, short lengths (seconds)")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--models", default="tiny,smollm2", help="comma list of tiny, smollm2 (full mode)")
    parser.add_argument("--smollm2-lengths", default="2048,4096")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", default="bf16,fp32", help="comma list of bf16, fp32 (full mode)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_flags()}")
    size = 512 if args.quick else 2048
    from longrope.hardware import cpu_speeds

    # Each row is compared with the peak of its own dtype. A dtype far slower than fp32 here (bf16 on an AVX2
    # CPU, ~1 GFLOP/s) is measured on a small product: a 2048^3 one would take minutes.
    slow = {"bf16"} if not cpu_speeds().bf16_fast else set()
    torch_dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    peaks = {d: matmul_peak(t, size=512 if d in slow else size) for d, t in torch_dtypes.items()}
    print(f"matmul peak ({size}^3, {args.threads} threads): bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s, fp32 "
          f"{peaks['fp32'] / 1e9:.1f} GFLOP/s (speed x = ours / naive tokens/s; mem x = naive / ours added RSS; "
          "% peak = our forward FLOP/s / the peak of the row's dtype)")
    failures: list[str] = []
    if args.quick:
        print("--quick: measured in this process (no memory figures; run without --quick for them)")
        failures += run_model("random tiny (vocab 8000)", "random", [128, 512], ["bf16", "fp32"], 1, args.threads,
                              peaks, fresh_process=False)
    else:
        models = {m.strip() for m in args.models.split(",")}
        dtypes = [d.strip() for d in args.dtypes.split(",")]
        if "tiny" in models:
            failures += run_model("tiny (built-in, window 256, vocab 4096)", "tiny", [256, 1024, 4096],
                                  dtypes, 2, args.threads, peaks)
        if args.skip_smollm2 or "smollm2" not in models:
            print("\nsmollm2 skipped (--skip-smollm2)")
        else:
            try:
                from longrope.errors import LongRopeError
                from longrope.models.loading import smollm2_gguf_path

                smollm2_gguf_path()
            except LongRopeError as exc:
                print(f"\nsmollm2 skipped: {exc}")
            else:
                lengths = [int(x) for x in args.smollm2_lengths.split(",")]
                failures += run_model("SmolLM2-135M (vocab 49152)", "smollm2", lengths, dtypes, 1,
                                      args.threads, peaks)
    for failure in failures:
        print(f"FAIL: ours and naive perplexity disagree: {failure}")
    print("RESULT", "FAIL" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
