"""The backend contract (`tests/jobs/contract.py`) on the embedded backend: real agent, real processes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_setup import LocalSetup

from jobs.contract import BackendContract
from lbm.jobs.model import JobSpec, Queue

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


class LocalDriver:
    def __init__(self, setup: LocalSetup):
        self.setup = setup
        self.backend = setup.backend
        self.region = setup.region()
        self.held_queue = "held"  # no capacity: its jobs wait RUNNABLE

    def _release_path(self, name: str) -> Path:
        return self.setup.root / f"release-{name}"

    def spec(
        self, name: str, *, outcome: str = "succeed", owner: str = "ann", queue: str | None = None
    ) -> JobSpec:
        command = (sys.executable, "-c", PROGRAM, name, outcome, str(self._release_path(name)))
        queue = queue or self.region.queues[0].name
        return JobSpec(
            name=name,
            owner=owner,
            queue=queue,
            command=command,
            artifact_uri=f"file://{self.setup.bucket}/outputs/{owner}-lbm/{name}/",
            share_identifier=owner,
        )

    def release(self, name: str) -> None:
        self._release_path(name).touch()

    def environment(self, name: str) -> dict[str, str] | None:
        path = Path(f"{self._release_path(name)}.env")
        return json.loads(path.read_text()) if path.exists() else None


class TestLocalContract(BackendContract):
    @pytest.fixture
    def contract(self, isolated_env: Path) -> Iterator[LocalDriver]:
        setup = LocalSetup(isolated_env, [Queue("wide", "cpu", 4), Queue("held", "cpu", 0)])
        yield LocalDriver(setup)
        setup.clean_up()
