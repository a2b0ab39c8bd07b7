"""The backend contract (`tests/jobs/contract.py`) on the Slurm backend, against the real test cluster."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_test_cluster import SlurmCluster

from jobs.contract import BackendContract
from lbm.jobs.model import JobSpec, Queue
from lbm.jobs.region import Region
from lbm.jobs.slurm.backend import SlurmBackend

pytestmark = pytest.mark.slow

# A job that says who it is, writes its environment, then ends as asked (holding until its release file).
PROGRAM = """
import json, os, pathlib, sys, time
name, outcome, release = sys.argv[1:4]
print(f"contract job {name}", flush=True)
pathlib.Path(release + ".env").write_text(json.dumps(dict(os.environ)))
while outcome == "hold" and not os.path.exists(release):
    time.sleep(0.02)
sys.exit(3 if outcome == "fail" else 0)
"""


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


class SlurmDriver:
    def __init__(self, root: Path):
        self.root = root
        self.region = slurm_region(root, [("debug", 1), ("held", 1)])
        self.backend = SlurmBackend(self.region)
        self.held_queue = "held"  # a DOWN partition: its jobs wait RUNNABLE (PartitionDown)

    def _release_path(self, name: str) -> Path:
        return self.root / f"release-{name}"

    def spec(
        self, name: str, *, outcome: str = "succeed", owner: str = "ann", queue: str | None = None
    ) -> JobSpec:
        command = (sys.executable, "-c", PROGRAM, name, outcome, str(self._release_path(name)))
        return JobSpec(
            name=name,
            owner=owner,
            queue=queue or self.region.queues[0].name,
            command=command,
            artifact_uri=f"file://{self.root}/bucket/outputs/{owner}-lbm/{name}/",
            share_identifier=owner,
        )

    def release(self, name: str) -> None:
        self._release_path(name).touch()

    def environment(self, name: str) -> dict[str, str] | None:
        path = Path(f"{self._release_path(name)}.env")
        return json.loads(path.read_text()) if path.exists() else None


class TestSlurmContract(BackendContract):
    @pytest.fixture
    def contract(self, slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[SlurmDriver]:
        driver = SlurmDriver(tmp_path)
        yield driver
        for job in driver.backend.list():
            if not job.state.is_terminal:
                driver.backend.stop(job.name, reason="test ended")
