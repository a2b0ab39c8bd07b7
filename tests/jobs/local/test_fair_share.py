"""Fair-share ordering as AWS Batch defines it: weights, decayed usage, priority, reservation."""

from __future__ import annotations

import math

import pytest

from lbm.jobs.local.fair_share import (
    QueuedJob,
    decayed_usage,
    fair_share_order,
    jobs_to_start,
    reserved_slots,
)


def jobs(share: str, count: int, first_seq: int, priority: int = 0, slots: int = 1) -> list[QueuedJob]:
    return [QueuedJob(f"{share}-{i}", share, priority, first_seq + i, slots) for i in range(count)]


def names(chosen: list[QueuedJob]) -> list[str]:
    return [job.name for job in chosen]


def test_decayed_usage_weighs_recent_use_more():
    assert decayed_usage([(0.0, 10.0, 1)], now=10.0, decay_s=10.0) == pytest.approx(10 * (1 - math.exp(-1)))
    recent = decayed_usage([(90.0, 100.0, 1)], now=100.0, decay_s=50.0)
    older = decayed_usage([(0.0, 10.0, 1)], now=100.0, decay_s=50.0)
    assert recent > older > 0
    assert decayed_usage([(90.0, None, 2)], now=100.0, decay_s=1e9) == pytest.approx(20.0, rel=1e-6)


def test_zero_decay_ignores_the_past():
    assert decayed_usage([(0.0, 10.0, 4)], now=10.0, decay_s=0.0) == 0.0


def test_reserved_slots_shrink_as_more_shares_are_active():
    assert reserved_slots(10, 50, 0) == 0
    assert reserved_slots(10, 50, 1) == 5
    assert reserved_slots(10, 50, 2) == 2
    assert reserved_slots(10, 0, 3) == 0


def test_two_equal_shares_alternate_from_first_come():
    queued = jobs("ann", 3, first_seq=0) + jobs("bob", 3, first_seq=10)

    assert names(fair_share_order(queued)) == ["ann-0", "bob-0", "ann-1", "bob-1", "ann-2", "bob-2"]


def test_lower_weight_gets_twice_the_share():
    queued = jobs("ann", 8, first_seq=0) + jobs("bob", 8, first_seq=100)

    order = names(fair_share_order(queued, weights={"ann": 0.5, "bob": 1.0}))[:6]

    assert [n.split("-")[0] for n in order].count("ann") == 4


def test_past_usage_puts_a_heavy_user_behind():
    queued = jobs("bob", 2, first_seq=0) + jobs("ann", 2, first_seq=10)

    order = names(fair_share_order(queued, usage={"bob": 3600.0, "ann": 10.0}))

    assert order[0] == "ann-0"


def test_instances_held_now_count_before_past_usage():
    queued = jobs("ann", 1, first_seq=0) + jobs("bob", 1, first_seq=1)

    order = names(fair_share_order(queued, running={"ann": 2}, usage={"bob": 1e6}))

    assert order == ["bob-0", "ann-0"]


def test_within_a_share_priority_then_first_come():
    queued = [
        QueuedJob("low-early", "ann", priority=1, seq=0),
        QueuedJob("high-late", "ann", priority=9, seq=5),
        QueuedJob("low-late", "ann", priority=1, seq=6),
    ]

    assert names(fair_share_order(queued)) == ["high-late", "low-early", "low-late"]


def test_start_only_what_fits_in_capacity():
    queued = jobs("ann", 3, first_seq=0) + jobs("bob", 3, first_seq=10)

    assert names(jobs_to_start(queued, capacity=3, running={"ann": 1})) == ["bob-0", "ann-0"]
    assert jobs_to_start(queued, capacity=2, running={"ann": 1, "bob": 1}) == []


def test_a_large_job_is_not_overtaken_by_small_ones():
    queued = [QueuedJob("big", "ann", seq=0, slots=3), QueuedJob("small", "bob", seq=1)]

    assert jobs_to_start(queued, capacity=4, running={"carl": 2}) == []
    assert names(jobs_to_start(queued, capacity=4)) == ["big", "small"]


def test_compute_reservation_keeps_room_for_idle_shares():
    queued = jobs("ann", 2, first_seq=0) + jobs("bob", 2, first_seq=10)

    chosen = jobs_to_start(queued, capacity=4, running={"ann": 2}, compute_reservation=50)

    # ann is active: it may use 4 - floor(4 * 0.5) = 2 instances, which it holds; idle bob may start one;
    # then two shares are active and 4 - floor(4 * 0.25) = 3 instances are in use: nothing more starts.
    assert names(chosen) == ["bob-0"]
