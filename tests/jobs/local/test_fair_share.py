"""Fair share as AWS Batch documents it: each expected order is worked out from the rule quoted beside it.

Sources: the AWS Batch User Guide ("Fair-share scheduling policies" and its pages "Use share identifiers to
identify workloads", "Use fair-share scheduling to help schedule jobs", "Jobs stuck in RUNNABLE due to
capacity") and the API reference (FairsharePolicy, ShareAttributes). AWS counts vCPUs; a local queue counts
instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lbm.jobs.local.fair_share import (
    QueuedJob,
    decay_window,
    decayed_usage,
    jobs_to_start,
    reserved_instances,
)

LOWEST_USAGE = (
    'User Guide, share identifiers: "The AWS Batch scheduler tracks usage for each share identifier by '
    "using the (T * weightFactor) formula, where T is the vCPU usage over time. The scheduler picks "
    'jobs with the lowest usage from the share identifier."'
)
LOWER_WEIGHT = (
    'ShareAttributes.weightFactor: "A lower value has a higher priority for compute resources. For '
    "example, jobs that use a share identifier with a weight factor of 0.125 (1/8) get 8 times the "
    'compute resources of jobs that use a share identifier with a weight factor of 1."'
)
DEFAULT_WEIGHT = (
    "FairsharePolicy.shareDistribution: \"Share identifiers that aren't included have a default weight "
    'of 1.0."'
)
PREFIX_WEIGHT = (
    'ShareAttributes.shareIdentifier: "If the string ends with an asterisk (*), this entry specifies '
    'the weight factor to use for share identifiers that start with that prefix."'
)
PRIORITY = (
    'User Guide, share identifiers: "You can set fair-share scheduling priority to configure the order '
    "that jobs are run in on a share identifier. Jobs with a higher scheduling priority are scheduled "
    'first."'
)
FIRST_COME = (
    'User Guide, fair-share scheduling policies: without a policy the scheduler "defaults to a '
    'first-in, first-out (FIFO) strategy"; lbm keeps that order among equals (equal usage, or equal '
    "priority in a share)."
)
RESERVATION = (
    'FairsharePolicy.computeReservation: "The reserved ratio is '
    "(computeReservation/100)^ActiveFairShares where ActiveFairShares is the number of active share "
    "identifiers. For example, a computeReservation value of 50 indicates that Batch reserves 50% of "
    "the maximum available vCPU if there's only one share identifier. It reserves 25% if there are two "
    'share identifiers. It reserves 12.5% if there are three share identifiers."'
)
ACTIVE = (
    'User Guide, fair-share scheduling: "If a share identifier has jobs in a SUBMITTED, PENDING, '
    "RUNNABLE, STARTING, or RUNNING state, it's considered an active share identifier. After the "
    'period of time for decay expires, a share identifier is considered inactive."'
)
HEAD_OF_QUEUE = (
    'User Guide, jobs stuck in RUNNABLE due to capacity: "Manually canceling the job will allow the '
    'subsequent job to move to the head of the queue." (the job at the head waits for capacity; those '
    "behind it wait too)"
)
DECAY = (
    'FairsharePolicy.shareDecaySeconds: "A value of zero (0) indicates the default minimum time window '
    "(600 seconds). The maximum supported value is 604800 (1 week). The decay allows for more recently "
    'run jobs to have more weight than jobs that ran earlier."'
)


@dataclass(frozen=True)
class Scenario:
    """A queue at one moment: jobs waiting (in arrival order), each share's past usage, and what starts."""

    rule: str
    queued: list[tuple[str, int, int]]  # (name "share-n", schedulingPriority, instances), first come first
    starts: list[str]
    capacity: int = 1
    in_use: int = 0
    usage: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    reservation: int = 0
    active: tuple[str, ...] = ()


def queued_jobs(spec: list[tuple[str, int, int]]) -> list[QueuedJob]:
    return [
        QueuedJob(name, name.rsplit("-", 1)[0], priority, seq, slots)
        for seq, (name, priority, slots) in enumerate(spec)
    ]


def one(name: str, priority: int = 0, slots: int = 1) -> tuple[str, int, int]:
    return (name, priority, slots)


SCENARIOS = {
    # equal weights and no usage yet: the first come goes first
    "tie-first-come": Scenario(FIRST_COME, [one("ann-0"), one("bob-0")], ["ann-0"]),
    # bob submitted first but used 100 instance-seconds, ann 10: ann has the lowest usage
    "least-usage-first": Scenario(
        LOWEST_USAGE, [one("bob-0"), one("ann-0")], ["ann-0"], usage={"ann": 10, "bob": 100}
    ),
    # ann used 3x bob's time, but her weight 0.25 makes it 75 against bob's 100
    "weight-scales-usage": Scenario(
        LOWER_WEIGHT,
        [one("bob-0"), one("ann-0")],
        ["ann-0"],
        usage={"ann": 300, "bob": 100},
        weights={"ann": 0.25},
    ),
    # with weight 0.5 the same 300 weighs 150: bob, at 100, goes first
    "weight-not-enough": Scenario(
        LOWER_WEIGHT,
        [one("ann-0"), one("bob-0")],
        ["bob-0"],
        usage={"ann": 300, "bob": 100},
        weights={"ann": 0.5},
    ),
    # weight 1/8 entitles ann to 8x bob's usage: at 7x she is still owed (87.5 < 100) ...
    "eighth-weight-under-8x": Scenario(
        LOWER_WEIGHT,
        [one("bob-0"), one("ann-0")],
        ["ann-0"],
        usage={"ann": 700, "bob": 100},
        weights={"ann": 0.125},
    ),
    # ... and at 9x she has had more than her share (112.5 > 100)
    "eighth-weight-over-8x": Scenario(
        LOWER_WEIGHT,
        [one("ann-0"), one("bob-0")],
        ["bob-0"],
        usage={"ann": 900, "bob": 100},
        weights={"ann": 0.125},
    ),
    # only ann has an entry (2): bob weighs 1, so 100 against ann's 2 x 40 = 80
    "unlisted-weight-is-1": Scenario(
        DEFAULT_WEIGHT,
        [one("bob-0"), one("ann-0")],
        ["ann-0"],
        usage={"ann": 40, "bob": 100},
        weights={"ann": 2},
    ),
    # team-a-grasp takes the team-a* weight 0.1: 500 weighs 50 against bob's 100
    "prefix-weight": Scenario(
        PREFIX_WEIGHT,
        [one("bob-0"), one("team-a-grasp-0")],
        ["team-a-grasp-0"],
        usage={"team-a-grasp": 500, "bob": 100},
        weights={"team-a*": 0.1},
    ),
    # a share outside the prefix keeps weight 1: team-b at 500 against bob's 100
    "prefix-does-not-match": Scenario(
        PREFIX_WEIGHT,
        [one("team-b-0"), one("bob-0")],
        ["bob-0"],
        usage={"team-b": 500, "bob": 100},
        weights={"team-a*": 0.1},
    ),
    # within ann's share: priority 9 first, then the two priority-1 jobs first come first
    "priority-within-share": Scenario(
        PRIORITY,
        [one("ann-0", 1), one("ann-1", 9), one("ann-2", 1)],
        ["ann-1", "ann-0", "ann-2"],
        capacity=3,
    ),
    # priority orders jobs of one share only: bob's priority-1 job beats ann's priority-9 on usage
    "priority-does-not-cross-shares": Scenario(
        PRIORITY,
        [one("ann-0", 9), one("bob-0", 1)],
        ["bob-0"],
        usage={"ann": 100},
    ),
    # ann holds 2 instances now, but for 1 s only (2 instance-seconds); bob has 50 from earlier: ann is next
    "usage-not-instances-held": Scenario(
        LOWEST_USAGE,
        [one("bob-0"), one("ann-0")],
        ["ann-0", "bob-0"],
        capacity=4,
        in_use=2,
        usage={"ann": 2, "bob": 50},
    ),
    # jobs starting now add no instance-seconds yet: the least-used share takes every free instance
    "least-used-share-fills-free-instances": Scenario(
        LOWEST_USAGE,
        [one("ann-0"), one("ann-1"), one("bob-0"), one("bob-1")],
        ["bob-0", "bob-1", "ann-0"],
        capacity=3,
        usage={"ann": 10},
    ),
    # ann's 3-instance job is next but only 2 of 4 are free: it waits, and bob's 1-instance job behind it too
    "wide-job-waits-at-the-head": Scenario(
        HEAD_OF_QUEUE,
        [one("ann-0", 0, 3), one("bob-0")],
        [],
        capacity=4,
        in_use=2,
        usage={"bob": 10},
    ),
    # when 4 are free it starts, and bob's behind it
    "wide-job-starts-when-it-fits": Scenario(
        HEAD_OF_QUEUE,
        [one("ann-0", 0, 3), one("bob-0")],
        ["ann-0", "bob-0"],
        capacity=4,
        usage={"bob": 10},
    ),
    # capacity 2, reservation 50, ann the only active share: 50% of 2 = 1 instance is held back
    "small-queue-one-active-share": Scenario(
        RESERVATION, [one("ann-0"), one("ann-1")], ["ann-0"], capacity=2, reservation=50
    ),
    # ann runs one job (1 in use) when bob submits: two active shares reserve 25% of 2 = 0.5, that is no
    # whole instance; bob has the lowest usage and takes the free one, ann's second job waits
    "small-queue-second-share-arrives": Scenario(
        RESERVATION,
        [one("ann-1"), one("bob-0")],
        ["bob-0"],
        capacity=2,
        in_use=1,
        usage={"ann": 10},
        reservation=50,
        active=("ann",),
    ),
    # ann's jobs all ended, but within the decay window: ann still counts as active, so bob (alone in the
    # queue) sees two active shares and nothing reserved
    "share-active-within-decay-window": Scenario(
        ACTIVE,
        [one("bob-0"), one("bob-1")],
        ["bob-0", "bob-1"],
        capacity=2,
        usage={"ann": 10},
        reservation=50,
        active=("ann",),
    ),
    # once the window has passed ann is inactive: bob alone, 1 of 2 instances reserved
    "share-inactive-after-decay-window": Scenario(
        ACTIVE, [one("bob-0"), one("bob-1")], ["bob-0"], capacity=2, reservation=50
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario_starts_what_the_aws_batch_rules_give(scenario: Scenario):
    chosen = jobs_to_start(
        queued_jobs(scenario.queued),
        capacity=scenario.capacity,
        in_use=scenario.in_use,
        usage=scenario.usage,
        weights=scenario.weights,
        compute_reservation=scenario.reservation,
        active_shares=scenario.active,
    )

    assert [job.name for job in chosen] == scenario.starts, scenario.rule


@pytest.mark.parametrize(
    ("capacity", "reservation", "active_shares", "usable"),
    [
        # RESERVATION on a small queue: 50% of 2 reserved for one share, 25% (0.5, no whole instance) for two
        (2, 50, 1, 1),
        (2, 50, 2, 2),
        (2, 99, 1, 1),
        (2, 0, 1, 2),
        # and on a large one: 50% -> 20, 25% -> 10, 12.5% -> 5 of 40; then 6.25% -> 2.5, rounded down to 2
        (40, 50, 1, 20),
        (40, 50, 2, 30),
        (40, 50, 3, 35),
        (40, 50, 4, 38),
        # computeReservation 25: 25% -> 10, 6.25% -> 2.5 -> 2, 1.56% -> 0.625 -> 0 of 40
        (40, 25, 1, 30),
        (40, 25, 2, 38),
        (40, 25, 3, 40),
    ],
)
def test_compute_reservation_keeps_its_share_of_the_queue_for_shares_not_active(
    capacity: int, reservation: int, active_shares: int, usable: int
):
    shares = [f"s{i}" for i in range(active_shares)]
    queued = [
        QueuedJob(f"{share}-{n}", share, seq=n * 10 + i)
        for n in range(capacity)
        for i, share in enumerate(shares)
    ]

    chosen = jobs_to_start(queued, capacity=capacity, compute_reservation=reservation)

    assert capacity - reserved_instances(capacity, reservation, active_shares) == usable, RESERVATION
    assert len(chosen) == usable, RESERVATION


def test_decay_window_is_share_decay_seconds_with_600_s_the_minimum():
    assert [decay_window(s) for s in (0, 1, 600, 3600, 604800)] == [600, 600, 600, 3600, 604800], DECAY


def test_usage_counts_running_and_recent_instance_seconds_decayed_over_the_window():
    # Linear decay over the window: a second used `age` s ago counts (1 - age / window).
    window = 600.0
    # a job of 1 instance that ran the whole window and just ended: the integral of (1 - a/600) over 0..600
    assert decayed_usage([(400.0, 1000.0, 1)], now=1000.0, window=window) == pytest.approx(300.0)
    # a running job (no stop yet) of 2 instances started 300 s ago: 2 * (300 - 300**2 / 1200)
    assert decayed_usage([(700.0, None, 2)], now=1000.0, window=window) == pytest.approx(450.0)
    # DECAY: "more recently run jobs have more weight than jobs that ran earlier"
    recent = decayed_usage([(900.0, 1000.0, 1)], now=1000.0, window=window)
    earlier = decayed_usage([(500.0, 600.0, 1)], now=1000.0, window=window)
    assert recent > earlier > 0, DECAY
    # ACTIVE: once the window has passed since a job ended, it counts nothing (its share turns inactive)
    assert decayed_usage([(0.0, 400.0, 4)], now=1000.0, window=window) == 0.0, ACTIVE


def simulate(weights: dict[str, float], capacity: int, seconds: int) -> dict[str, float]:
    """Two shares that always have 1-instance, 1-second jobs waiting: instance-seconds each gets."""
    intervals: dict[str, list[tuple[float, float | None, int]]] = {"ann": [], "bob": []}
    ends: list[float] = []
    seq = 0
    for now in range(seconds):
        ends = [end for end in ends if end > now]
        queued = []
        for share in intervals:
            queued += [QueuedJob(f"{share}-{seq + i}", share, seq=seq + i) for i in range(capacity)]
            seq += capacity
        usage = {share: decayed_usage(i, now, decay_window(604800)) for share, i in intervals.items()}
        for job in jobs_to_start(queued, capacity=capacity, in_use=len(ends), usage=usage, weights=weights):
            intervals[job.share].append((now, now + 1, 1))
            ends.append(now + 1)
    return {share: sum(stop - start for start, stop, _ in i) for share, i in intervals.items()}


@pytest.mark.parametrize("capacity", [1, 4])
@pytest.mark.parametrize(("ann_weight", "ratio"), [(1.0, 1.0), (0.5, 2.0), (0.125, 8.0)])
def test_over_time_a_share_gets_compute_in_inverse_proportion_to_its_weight(
    capacity: int, ann_weight: float, ratio: float
):
    got = simulate({"ann": ann_weight}, capacity, seconds=180)

    assert got["ann"] + got["bob"] == 180 * capacity
    assert got["ann"] / got["bob"] == pytest.approx(ratio, rel=0.1), LOWER_WEIGHT
