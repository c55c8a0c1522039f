"""How the search's fitness evaluation scales with length: time at 1x, 2x, 4x, 8x the window, log-log fit.

    python benchmarks/bench_scaling.py            # built-in tiny model (window 256): 256, 512, 1024, 2048 tokens
    python benchmarks/bench_scaling.py --quick    # seconds, a random tiny model (window 64): 64..512 (a test runs it)

One fitness evaluation is what the search does per candidate: `longrope.search.fitness.Evaluator.evaluate`
on ``--docs`` documents, ``--batch`` candidates per forward (rows = candidates, each with its own RoPE table),
bf16, chunked output head (`token_nll`). The time printed is per candidate (one evaluate call / batch). The
documents are random token ids: the time of a forward does not depend on the text. If the built-in tiny model
is not built yet, a random model of exactly its shape is used (same speed; it is never trained from here).

The exponent is the least-squares slope of log(time) against log(length): 1 means linear (weights dominate),
2 means quadratic (attention dominates). The split into attention / the rest comes from one profiled forward
(torch.profiler, CPU time of the ``scaled_dot_product_attention`` ops vs the whole forward) at each length,
next to the FLOP share of attention from `forward_flops`.

Exit status: 0, or 1 on a sanity failure (a non-finite fitness, or times that do not increase with length).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_time, cpu_flags, forward_flops  # noqa: E402

QUICK_CONFIG = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=4, head_dim=32, max_position_embeddings=64)
def random_model(config: dict, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**config)).to(dtype).eval()


def shipped_tiny(dtype: torch.dtype):
    """(model, description): the built-in tiny model shipped with the package."""
    from longrope.models.loading import load_model

    model, _ = load_model("tiny", dtype=dtype)
    return model.eval(), "built-in tiny model (shipped)"


def fit_exponent(lengths: list[int], times: list[float]) -> float:
    """Least-squares slope of log(time) vs log(length)."""
    xs = [math.log(x) for x in lengths]
    ys = [math.log(y) for y in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def attention_share(model, ids: torch.Tensor) -> tuple[float, float]:
    """(attention CPU seconds, forward wall seconds) of one profiled `token_nll` forward."""
    from torch.profiler import ProfilerActivity, profile

    from longrope.loss import token_nll

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        token_nll(model, ids)
        wall = time.perf_counter() - start
    attention_us = sum(e.cpu_time_total for e in prof.key_averages() if e.key == "aten::scaled_dot_product_attention")
    if attention_us == 0:  # not SDPA (eager attention): no single op to attribute, say so
        attention_us = math.nan
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages())
    return attention_us / 1e6, total_us / 1e6 if total_us else wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a random tiny model, short lengths (seconds)")
    parser.add_argument("--docs", type=int, default=None, help="documents per fitness (default 4; --quick 2)")
    parser.add_argument("--batch", type=int, default=None, help="candidates per forward (default 4; --quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats, best kept (default 3; --quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    docs = args.docs or (2 if args.quick else 4)
    batch = args.batch or (2 if args.quick else 4)
    repeats = args.repeats or (2 if args.quick else 3)
    dtype = getattr(torch, args.dtype)

    from longrope.rope.spec import LinearSpec
    from longrope.search.fitness import Evaluator, FitnessData

    print(f"machine: {cpu_flags()}")
    if args.quick:
        model, what = random_model(QUICK_CONFIG, dtype), "random tiny Llama (window 64)"
    else:
        model, what = shipped_tiny(dtype)
    window = model.config.max_position_embeddings
    lengths = [window * m for m in (1, 2, 4, 8)]
    print(f"model: {what}; {args.dtype}; one fitness = {docs} docs, {batch} candidates per forward "
          f"(time per candidate); attention: {model.config._attn_implementation}")
    print(f"{'length':>6} {'x':>3} | {'s/fitness':>9} {'tok/s':>8} | {'attn s':>7} {'fwd s':>7} {'attn %time':>10} "
          f"{'attn %FLOP':>10} | {'fitness':>8}")
    times, failures = [], []
    generator = torch.Generator().manual_seed(0)
    for length in lengths:
        ids = torch.randint(3, model.config.vocab_size, (docs, length), generator=generator)
        evaluator = Evaluator(model, FitnessData(ids), batch=batch)
        specs = [LinearSpec(factor=max(1.0, length / window) + 0.01 * i) for i in range(batch)]
        results = []
        seconds = best_time(lambda r=results, e=evaluator, c=specs: r.append(e.evaluate(c)), repeats=repeats) / batch
        fitness = [r.fitness for rs in results for r in rs]
        if not all(math.isfinite(f) for f in fitness):
            failures.append(f"non-finite fitness at {length}")
        attn, fwd = attention_share(model, ids[:1].expand(batch, -1))
        flops = forward_flops(model.config, length)
        attn_flops = model.config.num_hidden_layers * 2 * length * length * model.config.num_attention_heads * (
            getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads)
        times.append(seconds)
        print(f"{length:>6} {length // window:>2}x | {seconds:>9.3f} {docs * length / seconds:>8.0f} | {attn:>7.3f} "
              f"{fwd:>7.3f} {100 * attn / fwd:>9.1f}% {100 * attn_flops / flops:>9.1f}% | {fitness[0]:>8.4f}",
              flush=True)
    exponent = fit_exponent(lengths, times)
    # increasing: 8x must cost more than 1x, and no doubling may get more than 20% cheaper (timer noise on a
    # shared machine can make two near-equal short timings swap; a real drop cannot be noise)
    if times[-1] <= times[0] or any(b < 0.8 * a for a, b in zip(times, times[1:])):
        message = "times do not increase with length: " + ", ".join(f"{t:.4f}" for t in times)
        if args.quick:  # millisecond timings of a smoke run on a shared machine are noise: say it, do not fail
            print(f"note (quick mode, not checked): {message}")
        else:
            failures.append(message)
    # the exponent over the last doubling says where the curve is heading
    tail = math.log(times[-1] / times[-2]) / math.log(2)
    print(f"log-log fit over {lengths[0]}..{lengths[-1]}: time ~ length^{exponent:.2f} (last doubling: ^{tail:.2f})")
    for failure in failures:
        print(f"FAIL: {failure}")
    print(f"RESULT exponent {exponent:.2f}; {times[-1]:.3f} s per fitness at {lengths[-1]} tokens"
          + (" (SANITY FAIL)" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
