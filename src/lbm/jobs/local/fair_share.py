"""Fair-share placement as AWS Batch defines it, as pure functions of a queue's state.

Each share identifier (a team, else an owner) is entitled to capacity in inverse proportion to its weight
factor (a lower weight gets more). The next job comes from the share with the least weighted use: first the
instances it holds now, then its past instance-seconds decayed over `shareDecaySeconds`. Within a share,
higher priority goes first, then first come. `computeReservation` (a percentage, as in AWS Batch) holds back
`capacity * (reservation/100) ** active_shares` instances for shares that have nothing running yet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting in one queue: its share, priority, arrival order and the instances it needs."""

    name: str
    share: str
    priority: int = 0
    seq: int = 0
    slots: int = 1


def decayed_usage(intervals: Iterable[tuple[float, float | None, int]], now: float, decay_s: float) -> float:
    """Instance-seconds of `(start, stop or None if running, instances)` intervals, decayed exponentially.

    A second of use `age` seconds ago counts `exp(-age / decay_s)`; with `decay_s == 0` the past is ignored.
    """
    if decay_s <= 0:
        return 0.0
    total = 0.0
    for start, stop, instances in intervals:
        end = now if stop is None else min(stop, now)
        if end <= start:
            continue
        total += instances * decay_s * (math.exp(-(now - end) / decay_s) - math.exp(-(now - start) / decay_s))
    return total


def reserved_slots(capacity: int, compute_reservation: float, active_shares: int) -> int:
    """Instances kept for shares with nothing running, given how many shares are active."""
    if compute_reservation <= 0 or active_shares == 0:
        return 0
    return math.floor(capacity * (compute_reservation / 100.0) ** active_shares)


def fair_share_order(
    queued: Sequence[QueuedJob],
    *,
    running: Mapping[str, int] | None = None,
    usage: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
) -> list[QueuedJob]:
    """Every queued job in the order it should start, as if each started job kept its instances."""
    return _dispatch(
        queued, running or {}, usage or {}, weights or {}, capacity=None, compute_reservation=0.0
    )


def jobs_to_start(
    queued: Sequence[QueuedJob],
    *,
    capacity: int,
    running: Mapping[str, int] | None = None,
    usage: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
    compute_reservation: float = 0.0,
) -> list[QueuedJob]:
    """The queued jobs to start now, in order, within `capacity` instances and the compute reservation.

    When the next job in fair-share order does not fit in the free capacity, nothing after it starts
    (so a large job is not starved by small ones).
    """
    return _dispatch(queued, running or {}, usage or {}, weights or {}, capacity, compute_reservation)


def _dispatch(
    queued: Sequence[QueuedJob],
    running: Mapping[str, int],
    usage: Mapping[str, float],
    weights: Mapping[str, float],
    capacity: int | None,
    compute_reservation: float,
) -> list[QueuedJob]:
    by_share: dict[str, list[QueuedJob]] = {}
    for job in sorted(queued, key=lambda j: (-j.priority, j.seq)):
        by_share.setdefault(job.share, []).append(job)
    held = {share: n for share, n in running.items() if n > 0}
    in_use = sum(held.values())
    blocked: set[str] = set()
    chosen: list[QueuedJob] = []

    def rank(share: str) -> tuple[float, float, int]:
        weight = weights.get(share, 1.0)
        return (weight * held.get(share, 0), weight * usage.get(share, 0.0), by_share[share][0].seq)

    while True:
        open_shares = [s for s, jobs in by_share.items() if jobs and s not in blocked]
        if not open_shares:
            return chosen
        share = min(open_shares, key=rank)
        job = by_share[share][0]
        if capacity is not None:
            if in_use + job.slots > capacity:
                return chosen
            if share in held:
                limit = capacity - reserved_slots(capacity, compute_reservation, len(held))
                if in_use + job.slots > limit:
                    blocked.add(share)
                    continue
        by_share[share].pop(0)
        held[share] = held.get(share, 0) + job.slots
        in_use += job.slots
        chosen.append(job)
