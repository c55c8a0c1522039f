"""Run a small search in its own process (resume test, torchrun test). Prints the result as one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from search_helpers import small_config, small_data, small_model, small_needle_data

from longrope.errors import LongRopeError
from longrope.search import (
    fitness,
    search,
)
from longrope.search.distributed import shutdown


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument(
        "--delay", type=float, default=0.0, help="sleep per evaluation batch (to be killed mid-run)"
    )
    parser.add_argument(
        "--check-disagreement",
        action="store_true",
        help="first run a search whose seed differs between ranks and report its error",
    )
    parser.add_argument("--two", action="store_true", help="two objectives (--objective ppl+needle)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.delay:
        original = fitness.Evaluator.evaluate

        def slow(self, *a, **k):
            time.sleep(args.delay)
            return original(self, *a, **k)

        fitness.Evaluator.evaluate = slow
    if args.check_disagreement:
        rank = int(os.environ.get("RANK", "0"))
        try:
            search(
                small_model(),
                None,
                small_config(seed=rank),
                Path(args.out) / "disagree",
                progress=False,
                data=small_data(),
            )
        except LongRopeError as exc:
            print(f"disagreement error on rank {rank}: {exc}", file=sys.stderr)
        else:
            print(f"rank {rank}: no error for disagreeing ranks", file=sys.stderr)
            sys.exit(3)
    config = small_config(generations=args.generations, batch=args.batch,
                          objective="ppl+needle" if args.two else "ppl")
    data = small_needle_data() if args.two else small_data()
    try:
        result = search(small_model(), None, config, args.out, resume=args.resume, progress=False, data=data)
    except LongRopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            json.dumps(
                {
                    "genome": result.genome.key,
                    "fitness": result.fitness,
                    "evaluations": result.evaluations,
                    "forward_tokens": result.forward_tokens,
                    "needle": result.needle,
                    "front": None if result.front is None else [[m["fitness"], m["needle"]] for m in result.front],
                    "baselines": result.baselines,
                }
            )
        )


if __name__ == "__main__":
    try:
        main()
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # no rank closes its connections while another still reads
    finally:
        # As `longrope search` does: a rank that exits with its process group alive can abort in gloo's
        # threads at interpreter exit ("terminate called without an active exception"; seen once, in a full
        # test run on 2 busy cores).
        shutdown()
