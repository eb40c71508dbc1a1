"""torch.distributed plumbing: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; NCCL on GPUs, gloo on CPU."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from zoo.config import Execution


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} was asked for but CUDA is not available")
    return device


def planned_execution(device_preference: str = "auto", world_size: int | None = None) -> Execution:
    """The execution a run started here will have: what its run id must cover. The one place the GPU's bf16
    support is asked (`zoo.runner.plan` plans every run through it; nothing resolves a planned run again).
    `device_preference` may name one device (`str(ctx.device)`) to plan for a process that already has one."""
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_preference, 0)
    return Execution(device.type, world, device.type == "cuda" and torch.cuda.is_bf16_supported())


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join the process group torchrun describes in the environment; a plain `python` run is world size 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, device)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def _collective_device(ctx: DistContext) -> torch.device:
    """Where a small collective's tensor lives: NCCL only moves CUDA tensors, gloo CPU ones."""
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")


def broadcast_flag(ctx: DistContext, flag: bool) -> bool:
    """True on every rank if any rank says so (a MAX over ranks), e.g. 'stop: the loss diverged here'.

    A flag only rank 0 can raise (pass `ctx.is_main and ...`) is thereby rank 0's decision, sent to all."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], device=_collective_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def earliest_over_ranks(ctx: DistContext, step: float, value: float) -> tuple[float, float, int]:
    """(step, value, rank) of the rank with the smallest `step` (ties: the lowest rank), the same on every rank.

    A rank with nothing to report passes step=inf. This is how rank 0, the only writer of records, learns the step
    and the loss of the first NaN/inf when another rank's loss went first (every rank must call it)."""
    if not ctx.distributed:
        return step, value, ctx.rank
    mine = torch.tensor([step, value, float(ctx.rank)], dtype=torch.float64, device=_collective_device(ctx))
    rows = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(rows, mine)
    table = torch.stack(rows).cpu()
    first = min(range(ctx.world_size), key=lambda r: (float(table[r, 0]), r))
    return float(table[first, 0]), float(table[first, 1]), int(table[first, 2])


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled through the process group; for small, rare things like a resume)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)
