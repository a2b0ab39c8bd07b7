"""The process's place in a torchrun job: rank, world size, and the few collectives the trainer needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """Rank and world size from torchrun's environment (a single process when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> Distributed:
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )

    def start(self, device: torch.device) -> None:
        """Join the process group: NCCL on GPUs, gloo on CPU."""
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, total: float, count: int) -> float:
        """The mean over all ranks of per-rank sums `total` over `count` items."""
        if self.enabled:
            both = torch.tensor([total, float(count)], dtype=torch.float64)
            dist.all_reduce(both)
            total, count = both.tolist()
        return total / max(count, 1)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank (e.g. a stop request)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
