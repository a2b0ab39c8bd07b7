"""The resumable distributed sampler."""

from __future__ import annotations

from lbm.train.sampler import EpochSampler


def test_ranks_partition_an_epoch_and_epochs_differ():
    ranks = [EpochSampler(10, seed=1, rank=r, world_size=2) for r in range(2)]
    first = [list(s) for s in ranks]
    assert len(first[0]) == len(first[1]) == 5
    assert sorted(first[0] + first[1]) == list(range(10))
    for s in ranks:
        s.set_epoch(1)
    assert [list(s) for s in ranks] != first


def test_skip_resumes_mid_epoch_exactly():
    full = EpochSampler(12, seed=3)
    full.set_epoch(2)
    resumed = EpochSampler(12, seed=3)
    resumed.set_epoch(2, skip=5)
    assert list(resumed) == list(full)[5:]
    assert len(resumed) == 7
