"""Fair-share placement as AWS Batch defines it, as pure functions of a queue's state.

The rules (AWS Batch User Guide, "Fair-share scheduling policies"; API reference, FairsharePolicy and
ShareAttributes), in instances where AWS counts vCPUs:

- Each share identifier has one usage figure: the instance-seconds of its running and recently finished
  jobs, decayed over the share decay window. Its weight factor multiplies that usage (a lower weight gets a
  larger share) and the share with the least weighted usage goes next; on a tie, the share whose next job
  was submitted first.
- Within a share, a higher scheduling priority goes first, then first come.
- A share is active while it has jobs SUBMITTED through RUNNING, and until the decay window has passed since
  its last job ended. `computeReservation` keeps `capacity * (computeReservation/100) ** active_shares`
  instances (rounded down) for shares that are not active.
- The next job in that order waits at the head of the queue until enough instances are free, and the jobs
  behind it wait too, so a wide job is not starved by narrow ones.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

MIN_DECAY_WINDOW_S = 600
MAX_SHARE_DECAY_S = 604800
MAX_COMPUTE_RESERVATION = 99
MIN_WEIGHT_FACTOR = 0.0001
MAX_WEIGHT_FACTOR = 999.9999
DEFAULT_WEIGHT_FACTOR = 1.0
PREFIX_WILDCARD = "*"


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting in one queue: its share, priority, arrival order and the instances it needs."""

    name: str
    share: str
    priority: int = 0
    seq: int = 0
    slots: int = 1


def decay_window(share_decay_seconds: float) -> float:
    """The usage window of a `shareDecaySeconds` value: 0, or anything shorter, means the 600 s minimum."""
    return float(max(share_decay_seconds, MIN_DECAY_WINDOW_S))


def decayed_usage(intervals: Iterable[tuple[float, float | None, int]], now: float, window: float) -> float:
    """Instance-seconds of `(start, stop or None while running, instances)` intervals, decayed over `window`.

    A second of use `age` seconds ago counts `1 - age / window`; use older than the window counts nothing.
    """
    total = 0.0
    for start, stop, instances in intervals:
        end = now if stop is None else min(stop, now)
        newest_age, oldest_age = now - end, min(now - start, window)
        if oldest_age <= newest_age:
            continue
        total += instances * (oldest_age - newest_age - (oldest_age**2 - newest_age**2) / (2 * window))
    return total


def weight_factor(share: str, weights: Mapping[str, float]) -> float:
    """The share's weight: its own entry, else the `prefix*` entry it starts with, else 1."""
    if share in weights:
        return weights[share]
    for key, weight in weights.items():
        if key.endswith(PREFIX_WILDCARD) and share.startswith(key[: -len(PREFIX_WILDCARD)]):
            return weight
    return DEFAULT_WEIGHT_FACTOR


def reserved_instances(capacity: int, compute_reservation: float, active_shares: int) -> int:
    """Instances kept for shares that are not active, given how many are."""
    return math.floor(capacity * (Fraction(compute_reservation) / 100) ** active_shares)


def fair_share_order(
    queued: Sequence[QueuedJob],
    *,
    usage: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
) -> list[QueuedJob]:
    """Every queued job in the order it goes next, given each share's decayed usage."""
    usage, weights = usage or {}, weights or {}
    by_share: dict[str, list[QueuedJob]] = {}
    for job in sorted(queued, key=lambda j: (-j.priority, j.seq)):
        by_share.setdefault(job.share, []).append(job)
    shares = sorted(
        by_share, key=lambda s: (weight_factor(s, weights) * usage.get(s, 0.0), by_share[s][0].seq)
    )
    return [job for share in shares for job in by_share[share]]


def jobs_to_start(
    queued: Sequence[QueuedJob],
    *,
    capacity: int,
    in_use: int = 0,
    usage: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
    compute_reservation: float = 0.0,
    active_shares: Collection[str] = (),
) -> list[QueuedJob]:
    """The queued jobs to start now, in order, within the instances that are free and not reserved.

    `in_use` is the instances held by running jobs; `active_shares` the shares active besides those with
    queued jobs (running, or their last job ended within the decay window).
    """
    active = len({*active_shares, *(job.share for job in queued)})
    free = capacity - reserved_instances(capacity, compute_reservation, active) - in_use
    chosen: list[QueuedJob] = []
    for job in fair_share_order(queued, usage=usage, weights=weights):
        if job.slots > free:
            break
        chosen.append(job)
        free -= job.slots
    return chosen
