"""Queues without capacity take jobs that wait; a job bigger than a queue can ever give is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from local_setup import LocalSetup

from lbm.errors import LbmError
from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.model import JobState, Queue


@pytest.fixture
def gpus(isolated_env: Path):
    """Queues `gpus` (2 of this machine's 2 GPUs), `no-gpus` (0) and `no-cpus` (0 slots)."""
    setup = LocalSetup(
        isolated_env,
        [Queue("gpus", "gpu-test", 2), Queue("no-gpus", "gpu-test", 0), Queue("no-cpus", "cpu", 0)],
        devices={"gpu-test": (0, 1)},
    )
    yield setup
    setup.clean_up()


def test_jobs_on_queues_without_capacity_wait_until_it_comes(gpus: LocalSetup):
    gpus.submit("on-no-gpus", "print('ran on a GPU')", queue="no-gpus")
    gpus.submit("on-no-gpus-wide", "print('ran on 4 GPUs')", queue="no-gpus", nproc_per_node=4)
    gpus.submit("on-no-cpus", "print('ran on a CPU')", queue="no-cpus", nproc_per_node=4)
    for name in ("on-no-gpus", "on-no-gpus-wide", "on-no-cpus"):
        assert gpus.wait_state(name, [JobState.RUNNABLE]).attempts == []
    usage = {u.queue: (u.running, u.pending, u.capacity) for u in gpus.backend.usage()}
    assert usage["no-gpus"] == (0, 2, 0) and usage["no-cpus"] == (0, 1, 0)

    # The site gives the queues capacity (as a compute environment scales up): the waiting jobs start.
    grown = [Queue("gpus", "gpu-test", 2), Queue("no-gpus", "gpu-test", 1), Queue("no-cpus", "cpu", 1)]
    scaled = LocalBackend(gpus.region(grown), gpus.home.root)
    gpus.backends.append(scaled)
    scaled.submit(gpus.spec("after-scaling", "pass", queue="no-cpus"), {})

    assert gpus.wait_ended("on-no-gpus").state is JobState.SUCCEEDED
    assert gpus.wait_ended("on-no-cpus").state is JobState.SUCCEEDED
    assert gpus.wait_ended("after-scaling").state is JobState.SUCCEEDED
    assert list(gpus.backend.logs("on-no-gpus")) == ["ran on a GPU"]
    # Four GPUs never fit the one the queue now has: the job keeps waiting rather than failing.
    assert gpus.backend.describe("on-no-gpus-wide").state is JobState.RUNNABLE


def test_more_gpus_than_a_queue_can_ever_give_is_a_clear_error(gpus: LocalSetup):
    with pytest.raises(LbmError) as error:
        gpus.submit("too-wide", "pass", queue="gpus", nproc_per_node=3)

    assert str(error.value) == (
        "job needs 3 GPUs (--nproc-per-node 3) but queue gpus can give at most 2 gpu-test GPUs; "
        "use --nproc-per-node 2 or less"
    )
    assert gpus.backend.list() == []
