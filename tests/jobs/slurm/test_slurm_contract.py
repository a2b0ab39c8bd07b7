"""The backend contract (`tests/jobs/contract.py`) on the Slurm backend, against the real test cluster."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_test_cluster import SlurmCluster

import polling
from jobs.contract import DEADLINE_S, BackendContract, ProcessDriver, wait_state
from lbm.jobs.model import JobState, Queue
from lbm.jobs.region import Region
from lbm.jobs.slurm import commands
from lbm.jobs.slurm.backend import SlurmBackend

pytestmark = pytest.mark.slow


def slurm_region(root: Path, queues: list[tuple[str, int]]) -> Region:
    """A site region of the Slurm backend over the test cluster's partitions (name, nodes)."""
    return Region(
        name="cluster",
        backend="slurm",
        bucket=f"file://{root / 'bucket'}",
        prefix="outputs",
        queues=[Queue(p, p, nodes, settings={"partition": p}) for p, nodes in queues],
        settings={"stateDir": str(root / "state"), "python": sys.executable},
    )


class SlurmDriver(ProcessDriver):
    def __init__(self, root: Path):
        super().__init__(root)
        self.region = slurm_region(root, [("debug", 1), ("held", 1)])
        self.backend = SlurmBackend(self.region)
        self.held_queue = "held"  # a DOWN partition: its jobs wait RUNNABLE (PartitionDown)


class TestSlurmContract(BackendContract):
    @pytest.fixture
    def contract(self, slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[SlurmDriver]:
        driver = SlurmDriver(tmp_path)
        yield driver
        for job in driver.backend.list():
            if not job.state.is_terminal:
                driver.backend.stop(job.name, reason="test ended")


# A job that ignores SIGTERM, so a stop's request to checkpoint goes unheeded.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring', flush=True); time.sleep(600)"
)


def logged(driver: SlurmDriver, name: str, text: str) -> bool | None:
    return any(text in line for line in driver.backend.logs(name, from_head=True)) or None


def test_a_second_stop_cancels_a_job_that_ignored_the_first(slurm_cluster: SlurmCluster, tmp_path: Path):
    driver = SlurmDriver(tmp_path)
    spec = dataclasses.replace(driver.spec("ann-stubborn"), command=(sys.executable, "-c", STUBBORN))
    driver.backend.submit(spec, {})
    polling.wait_for(lambda: logged(driver, spec.name, "ignoring"), "the job to ignore SIGTERM", DEADLINE_S)
    driver.backend.stop(spec.name, reason="stopped by user")
    polling.wait_for(lambda: logged(driver, spec.name, "stop requested"), "the stop passed on", DEADLINE_S)
    assert driver.backend.describe(spec.name).state is JobState.RUNNING  # the job ignored it

    driver.backend.stop(spec.name, reason="stopped again")
    job = wait_state(driver, spec.name, [JobState.SUCCEEDED, JobState.FAILED], [])
    assert (job.state, job.status_reason) == (JobState.FAILED, "stopped by user")  # the first reason stays
    assert {j.job_id: j for j in commands.squeue_jobs()}[job.engine_id].state == "CANCELLED"
