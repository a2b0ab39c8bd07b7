"""Fair share through the real agent: weight factors (with a prefix entry) and the compute reservation.

The rules quoted are AWS Batch's (User Guide "Fair-share scheduling policies", API reference FairsharePolicy
and ShareAttributes); `test_fair_share.py` checks the same rules on the pure functions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from local_setup import LocalSetup

from lbm.jobs.local import daemon
from lbm.jobs.model import JobState, Queue

pytestmark = pytest.mark.slow

WAIT_FOR_GO = """
import os, pathlib, time
go = pathlib.Path({go_dir!r}, os.environ["LBM_JOB_NAME"])
while not go.exists():
    time.sleep(0.02)
"""
WEEK_S = 604800


def test_weight_factors_order_a_one_slot_queue_by_weighted_usage(isolated_env: Path):
    # "The AWS Batch scheduler tracks usage for each share identifier by using the (T * weightFactor) formula,
    # where T is the vCPU usage over time. The scheduler picks jobs with the lowest usage" (User Guide); a
    # `prefix*` entry "specifies the weight factor to use for share identifiers that start with that prefix"
    # (ShareAttributes). ann takes the an* weight 0.3, bob the default 1.
    weights = {"an*": 0.3}
    closed = LocalSetup(isolated_env, [Queue("shared", "cpu", 0, share_decay_seconds=WEEK_S)])
    names = [f"bob-{i}" for i in range(3)] + [f"ann-{i}" for i in range(6)]
    try:
        for name in names:
            closed.submit(name, "import time; time.sleep(0.1)", owner=name.split("-")[0])
        # Open the queue (capacity 1) only once every job waits in it.
        opened = closed.region(
            [Queue("shared", "cpu", 1, share_decay_seconds=WEEK_S, weight_factors=weights)]
        )
        closed.backend.store.save_region(opened.name, opened.to_dict())
        daemon.ensure_agent(closed.home)
        jobs = [closed.wait_ended(name) for name in names]
    finally:
        closed.clean_up()

    assert [job.state for job in jobs] == [JobState.SUCCEEDED] * len(names)
    runs = sorted((job.attempts[0].started_at, job.attempts[0].stopped_at, job.spec.owner) for job in jobs)
    order = [owner for _, _, owner in runs]
    assert order[0] == "bob", "equal usage (none yet): the first come goes first"
    # Replay the record: at every start, the share that started had the least weighted instance-seconds of
    # the shares with jobs still waiting (a week's decay changes these seconds by under 1e-4 of themselves).
    for n, (_, _, owner) in enumerate(runs):
        waiting = {o for _, _, o in runs[n:]}
        used = {
            share: sum(stop - start for start, stop, o in runs[:n] if o == share)
            * (0.3 if share == "ann" else 1)
            for share in waiting
        }
        assert used[owner] <= min(used.values()) * (1 + 1e-4) + 1e-6, (n, order, used)
    # weight 0.3: ann's usage stays under bob's one job until she has run three or four (equal weights: one)
    assert order.index("bob", 1) >= 4, order


def one_more_pass(setup: LocalSetup) -> None:
    """Wait until the agent has finished a scheduling pass that began after this call.

    A probe job on the `probe` queue, listed after the tested one, is promoted at the start of a pass that
    begins after it is submitted; that pass places the tested queue's jobs before it starts the probe.
    """
    probe = f"probe-{len(setup.backend.list())}"
    setup.submit(probe, "pass", queue="probe")
    assert setup.wait_ended(probe).state is JobState.SUCCEEDED


def test_compute_reservation_on_a_two_instance_queue(isolated_env: Path, tmp_path: Path):
    # "The reserved ratio is (computeReservation/100)^ActiveFairShares ... a computeReservation value of 50
    # indicates that Batch reserves 50% of the maximum available vCPU if there's only one share identifier. It
    # reserves 25% if there are two" (FairsharePolicy).
    go_dir = tmp_path / "go"
    go_dir.mkdir()
    code = WAIT_FOR_GO.format(go_dir=str(go_dir))
    setup = LocalSetup(
        isolated_env, [Queue("pair", "cpu", 2, compute_reservation=50), Queue("probe", "cpu", 1)]
    )
    try:
        setup.submit("ann-0", code, owner="ann", queue="pair")
        setup.submit("ann-1", code, owner="ann", queue="pair")
        setup.wait_state("ann-0", [JobState.RUNNING])
        one_more_pass(setup)
        assert setup.backend.describe("ann-1").state is JobState.RUNNABLE, "ann alone: 1 of 2 reserved"

        setup.submit("bob-0", code, owner="bob", queue="pair")
        setup.wait_state("bob-0", [JobState.RUNNING])
        one_more_pass(setup)
        # Two active shares reserve 25% of 2, no whole instance: bob, with the lower usage, took the free one.
        assert setup.backend.describe("ann-1").state is JobState.RUNNABLE

        (go_dir / "ann-0").touch()
        setup.wait_state("ann-1", [JobState.RUNNING])
        for name in ("ann-1", "bob-0"):
            (go_dir / name).touch()
        assert [setup.wait_ended(n).state for n in ("ann-0", "ann-1", "bob-0")] == [JobState.SUCCEEDED] * 3
    finally:
        setup.clean_up()


def test_compute_reservation_on_a_forty_instance_queue(isolated_env: Path, tmp_path: Path):
    # The same rule on 40 instances, with jobs of 10, 5 and 3 GPUs: one active share may use 40 - 20, two
    # 40 - 10, three 40 - 5 and four 40 - 2 (6.25% of 40 is 2.5 instances, rounded down).
    go_dir = tmp_path / "go"
    go_dir.mkdir()
    code = WAIT_FOR_GO.format(go_dir=str(go_dir))
    queues = [Queue("wide", "gpu-test", 40, compute_reservation=50), Queue("probe", "cpu", 1)]
    setup = LocalSetup(isolated_env, queues, devices={"gpu-test": tuple(range(40))})
    names = ["ann-0", "ann-1", "ann-2"]

    def in_use() -> int:
        jobs = [setup.backend.describe(name) for name in names]
        return sum(job.spec.nproc_per_node for job in jobs if job.state is JobState.RUNNING)

    try:
        for name in names:
            setup.submit(name, code, owner="ann", queue="wide", nproc_per_node=10)
        setup.wait_state("ann-1", [JobState.RUNNING])
        one_more_pass(setup)
        assert in_use() == 20, "ann alone: 20 of 40 reserved"
        for name, gpus, usable in [("bob-0", 10, 30), ("carl-0", 5, 35), ("dan-0", 3, 38)]:
            names.append(name)
            setup.submit(name, code, owner=name.split("-")[0], queue="wide", nproc_per_node=gpus)
            setup.wait_state(name, [JobState.RUNNING])
            one_more_pass(setup)
            # the newcomer, with no usage yet, took the room the smaller reservation left; ann-2 still waits
            assert in_use() == usable, name
            assert setup.backend.describe("ann-2").state is JobState.RUNNABLE, name

        for name in names:
            (go_dir / name).touch()
        assert [setup.wait_ended(n).state for n in names] == [JobState.SUCCEEDED] * len(names)
    finally:
        setup.clean_up()
