"""The backend contract (`tests/jobs/contract.py`) on the Slurm backend, against the real test cluster."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_test_cluster import SlurmCluster

from jobs.contract import BackendContract, ProcessDriver
from lbm.jobs.model import Queue
from lbm.jobs.region import Region
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
