"""A distributed, resumable sampler: a fresh permutation each epoch, shard per rank, start mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Indices for one rank: the epoch's permutation (seeded by seed and epoch), every world_size-th one.

    Each rank gets the same number of indices (the tail is dropped), so ranks step together.
    `set_epoch(e, skip)` starts epoch `e` after `skip` of this rank's indices, to resume exactly where a
    checkpoint was taken.
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def per_rank(self) -> int:
        return self.size // self.world_size

    def __len__(self) -> int:
        return self.per_rank() - self.skip

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        mine = order[self.rank : self.per_rank() * self.world_size : self.world_size]
        return iter(mine[self.skip :])
