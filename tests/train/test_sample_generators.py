"""Random draws keyed by (seed, epoch, sample index)."""

from __future__ import annotations

import torch

from lbm.train.sample_generators import SampleGenerators

CPU = torch.device("cpu")


def test_a_samples_draws_do_not_depend_on_its_batch():
    together = SampleGenerators(7, 2, [3, 11, 5])
    alone = SampleGenerators(7, 2, [11])
    assert torch.equal(together.normal((4, 2), CPU)[1], alone.normal((4, 2), CPU)[0])
    assert torch.equal(together.integers(100, (3,), CPU)[1], alone.integers(100, (3,), CPU)[0])


def test_draws_change_with_the_epoch_the_seed_and_the_index():
    def noise(seed: int, epoch: int, index: int) -> torch.Tensor:
        return SampleGenerators(seed, epoch, [index]).normal((16,), CPU)[0]

    base = noise(7, 2, 3)
    assert torch.equal(base, noise(7, 2, 3))
    for other in (noise(7, 3, 3), noise(8, 2, 3), noise(7, 2, 4)):
        assert not torch.allclose(base, other)


def test_integers_cover_the_range_and_only_it():
    draws = SampleGenerators(0, 0, range(64)).integers(5, (20,), CPU)
    assert draws.shape == (64, 20) and draws.dtype == torch.int64
    assert set(draws.unique().tolist()) == {0, 1, 2, 3, 4}
