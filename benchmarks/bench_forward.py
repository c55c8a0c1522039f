"""Forward efficiency: achieved FLOP/s of a long forward (model FLOPs from the config) / this CPU's peak in the
dtype the forward ran in (--dtype auto: longrope.hardware's measured choice).

    python benchmarks/bench_forward.py            # tiny model at 256..2048, SmolLM2 at 4k and 8k if installed
    python benchmarks/bench_forward.py --quick    # seconds, a random model: the CI smoke test
    python benchmarks/bench_forward.py --profile  # + torch.profiler table of the longest forward's top ops
    python benchmarks/bench_forward.py --ablation # + the last model's longest forward without the in-place
                                                  #   layers and the row-wise logsumexp, timed alternately

The tiny rows use the trained built-in model if it is built, else random weights of its shape (same speed).

The peak is a 2048^3 matmul in that dtype measured in the same run. Exits non-zero if a sanity check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_time, cpu_flags, forward_flops, matmul_peak  # noqa: E402

from longrope.loss import token_nll  # noqa: E402


def measure(model, name: str, lengths: list[int], peak: float, repeats: int) -> list[tuple]:
    rows = []
    vocab = model.config.vocab_size
    for length in lengths:
        ids = torch.randint(3, vocab, (1, length))
        losses = []

        def run(ids=ids, losses=losses):
            with torch.no_grad():
                losses.append(token_nll(model, ids).mean().item())

        seconds = best_time(run, repeats=repeats)
        flops = forward_flops(model.config, length)
        achieved = flops / seconds
        if not all(math.isfinite(x) for x in losses):
            raise SystemExit(f"sanity: non-finite loss for {name} at {length}")
        rows.append((name, length, seconds, achieved, achieved / peak))
        print(f"{name:>10} {length:>6} tokens: {seconds:7.3f} s  {achieved / 1e9:7.1f} GFLOP/s  "
              f"{100 * achieved / peak:5.1f}% of peak", flush=True)
    return rows


def profile_forward(model, length: int, rows: int) -> None:
    """torch.profiler table of the top ops (by self CPU time) of one `token_nll` forward."""
    from torch.profiler import ProfilerActivity, profile

    ids = torch.randint(3, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        token_nll(model, ids)
    dtype = next(model.parameters()).dtype
    print(f"\nprofile of one {length}-token forward ({type(model).__name__}, {dtype}),"
          f" top {rows} ops by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48))


@contextlib.contextmanager
def without_scoring_extras():
    """`token_nll` as before 2026-11-26: transformers' own RMSNorm / MLP forwards, one float32 logsumexp per
    1024-position chunk."""
    from longrope import loss

    saved = loss.inplace_layers, loss.LOGSUMEXP_ROWS
    loss.inplace_layers, loss.LOGSUMEXP_ROWS = (lambda model: contextlib.nullcontext(0)), 1 << 30
    try:
        yield
    finally:
        loss.inplace_layers, loss.LOGSUMEXP_ROWS = saved


def ablation(model, name: str, length: int, rounds: int = 3) -> None:
    """Alternate forwards with and without the in-place layers and row-wise logsumexp; print the time ratio."""
    ids = torch.randint(3, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(2))
    times: dict[str, list[float]] = {"with": [], "without": []}
    with torch.no_grad():
        first = token_nll(model, ids)
        with without_scoring_extras():
            same = torch.equal(first, token_nll(model, ids))
        for _ in range(rounds):
            for label in ("without", "with"):
                with without_scoring_extras() if label == "without" else contextlib.nullcontext():
                    started = time.perf_counter()
                    token_nll(model, ids)
                    times[label].append(time.perf_counter() - started)
    best = {label: min(values) for label, values in times.items()}
    print(f"\nablation, {name} at {length} tokens (best of {rounds}, alternating): without {best['without']:.3f} s, "
          f"with {best['with']:.3f} s: ratio {best['with'] / best['without']:.3f}; same NLL bit for bit: {same}")
    if not same:
        raise SystemExit("sanity: the in-place layers changed the NLL")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a random tiny model, short lengths (CI smoke test)")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--profile", type=int, nargs="?", const=15, default=0, metavar="ROWS",
                        help="print a torch.profiler table (top ROWS ops, default 15) of one forward of the last "
                             "model at its longest length (SmolLM2 8k, or the tiny model at 2048)")
    parser.add_argument("--ablation", action="store_true",
                        help="time the last model's longest forward with and without the in-place layers and the "
                             "row-wise logsumexp (alternating, same process)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--dtype", default="auto", help="auto (longrope.hardware's measured choice), fp32 or bf16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from longrope.hardware import dtype_name, resolve_precision

    dtype = resolve_precision("cpu", args.dtype).dtype
    dtype_label = dtype_name(dtype)
    print(f"machine: {cpu_flags()}")
    size = 1024 if args.quick else 2048
    # The other dtype's peak is context only: a small product, since bf16 on an AVX2 CPU runs at ~1 GFLOP/s and a
    # 2048^3 one would take minutes.
    peaks = {d: matmul_peak(d, size=size if d == dtype else 512, repeats=5 if d == dtype else 2)
             for d in (torch.bfloat16, torch.float32)}
    bf16_peak, fp32_peak = peaks[torch.bfloat16], peaks[torch.float32]
    peak = peaks[dtype]
    print(f"bf16 matmul peak {bf16_peak / 1e9:.1f} GFLOP/s; fp32 {fp32_peak / 1e9:.1f} GFLOP/s "
          f"(bf16/fp32 = {bf16_peak / fp32_peak:.2f}x); running in {dtype_label}, against the {dtype_label} peak")
    if args.quick:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
        model = LlamaForCausalLM(config).to(dtype).eval()
        rows = measure(model, "random", [128, 512], peak, repeats=2)
        last = (model, 512, "random")
    else:
        from bench_scaling import shipped_tiny

        from longrope.models.loading import load_model

        model, what = shipped_tiny(dtype)
        print(f"tiny: {what}")
        rows = measure(model, "tiny", [256, 512, 1024, 2048], peak, repeats=3)
        last = (model, 2048, "tiny")
        if not args.skip_smollm2:
            try:
                model, _ = load_model("smollm2", dtype=dtype, device="cpu")
            except Exception as exc:  # not installed: say so, measure the rest
                print(f"smollm2 skipped: {exc}")
            else:
                rows += measure(model, "smollm2", [4096, 8192], peak, repeats=3)  # best of 3: one forward is noisy
                last = (model, 8192, "smollm2")
    if args.profile:
        profile_forward(last[0], last[1], args.profile)
    if args.ablation:
        ablation(last[0], last[2], last[1])
    for name, length, _, _, efficiency in rows:
        if name == "smollm2" and length == 8192:
            print(f"GOAL SmolLM2 at 8k: {100 * efficiency:.1f}% of {dtype_label} peak (target >= 50%): "
                  f"{'met' if efficiency >= 0.5 else 'NOT met'}")
    best = max(rows, key=lambda r: r[4])
    print(f"RESULT best efficiency {100 * best[4]:.1f}% of {dtype_label} peak ({best[0]} at {best[1]} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
