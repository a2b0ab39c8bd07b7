"""Random draws that depend only on the seed, the epoch and the sample index.

A sample gets the same crops, noise and timesteps whichever process, loader worker, batch or run (the
uninterrupted one or one resumed from a checkpoint) it lands in, as MosaicML Streaming and torchtitan make
resumption deterministic: nothing is drawn from a generator whose state depends on what ran before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# First key of every derived seed, so that seeds made for different purposes never coincide.
SAMPLE_KEY = 0
STEP_KEY = 1


def derived_seed(*keys: int) -> int:
    """A 64-bit seed mixed from non-negative integer keys (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0])


class SampleGenerators:
    """One CPU `torch.Generator` per sample of a batch, seeded from (seed, epoch, that sample's index).

    Each draw returns [B, *shape] on `device`, row b drawn from sample b's generator, so a sample's draws
    do not depend on the other samples of its batch.
    """

    def __init__(self, seed: int, epoch: int, indices: Sequence[int]):
        self.generators = [
            torch.Generator().manual_seed(derived_seed(SAMPLE_KEY, seed, epoch, int(index)))
            for index in indices
        ]

    def __len__(self) -> int:
        return len(self.generators)

    def normal(self, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """Standard normal float32 [B, *shape]."""
        return torch.stack([torch.randn(tuple(shape), generator=g) for g in self.generators]).to(device)

    def integers(self, high: int, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """Uniform int64 in [0, high), [B, *shape]."""
        return torch.stack([torch.randint(high, tuple(shape), generator=g) for g in self.generators]).to(
            device
        )
