"""Distributed training helpers: one place that knows how ``torchrun`` describes a run.

Single-process runs see rank 0 of a world of 1 and every helper is a no-op, so callers never
branch on whether a process group exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes outputs, checkpoints and logs."""
        return self.rank == 0

    def device(self) -> torch.device:
        """This rank's GPU, or the CPU."""
        return torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")


def active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init() -> Distributed:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1; NCCL on GPU, gloo on
    CPU); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not active():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", 0)))


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if active():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def average_(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over ranks in place (a no-op without a process group)."""
    if active():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.AVG)
    return tensor


def broadcast_buffers(module: torch.nn.Module, source: int = 0) -> None:
    """Give every rank ``source``'s buffers (BatchNorm statistics), as exported."""
    if active():
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=source)
