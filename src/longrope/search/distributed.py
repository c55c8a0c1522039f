"""Spreading candidate evaluations over processes started by ``torchrun`` (gloo on CPU, NCCL on GPU).

Every rank holds a model replica and runs the same search loop. Rank 0 owns the state file: it reads it on
resume and broadcasts it, and it draws each generation's candidates and broadcasts them, so only its random
generator matters. The candidates of a batch round are dealt out (``batch`` per rank), each rank scores its
share, the results are gathered on every rank, and rank 0 writes the log and the state. Before anything,
the ranks compare their search hash (config + model + data); any disagreement is a `LongRopeError` on all
ranks. Results equal a one-rank run with the same seed because racing thresholds depend only on the state
at the start of a candidate group, never on which rank finished first.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch

from longrope.errors import LongRopeError


class Comm:
    """One process, no communication (the default)."""

    rank = 0
    world = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj):
        return obj

    def all_gather(self, obj) -> list:
        return [obj]

    def check_same(self, value: str, what: str) -> None:
        pass

    def barrier(self) -> None:
        pass


class TorchComm(Comm):
    """``torch.distributed`` process group (object collectives)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def broadcast(self, obj):
        box = [obj if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj) -> list:
        out = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def check_same(self, value: str, what: str) -> None:
        values = self.all_gather(value)
        if len(set(values)) != 1:
            shown = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
            raise LongRopeError(
                f"the ranks disagree on the {what} ({shown}); start every rank with the same model, data and "
                "search options"
            )

    def barrier(self) -> None:
        self.dist.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(timeout_minutes: float = 30.0) -> Comm:
    """A `TorchComm` when started by torchrun with more than one process (initialising the group), else `Comm`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return TorchComm()
    if not launched_by_torchrun():
        return Comm()
    if not dist.is_available():
        raise LongRopeError("this torch build has no torch.distributed; run without torchrun")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    return TorchComm()


def local_device(device: str = "auto") -> str:
    """The device of this rank for the ``--device`` asked: ``auto`` or ``cuda`` is ``cuda:LOCAL_RANK`` on a GPU
    machine (one rank per GPU under torchrun); anything else is used as given."""
    from longrope.hardware import resolve_device

    resolved = resolve_device(device)  # refuses a device this machine lacks
    if resolved.type == "cuda" and device.strip().lower() in ("auto", "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return str(resolved)


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
