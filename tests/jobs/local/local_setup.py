"""Helpers for local-backend tests: a tmp $LBM_HOME and bucket, regions, small Python jobs, waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

import polling
from lbm.jobs import crash_points
from lbm.jobs.local import daemon
from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.local.daemon import agent_pid, agent_running, wait_agent_pid
from lbm.jobs.local.home import LocalHome
from lbm.jobs.local.processes import signal_attempt
from lbm.jobs.local.store import JobStore
from lbm.jobs.model import Job, JobSpec, JobState, Queue
from lbm.jobs.region import Region, SlackSettings

DEADLINE_S = 60.0
ENDED = (JobState.SUCCEEDED, JobState.FAILED)


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE_S) -> object:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    return polling.wait_for(condition, what, timeout, interval=0.02)


def agent_dies_at(local: LocalSetup, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """Start an agent set to kill itself at `point`; return once it is gone (the setting is unset again)."""
    monkeypatch.setenv(crash_points.ENV, point)
    assert daemon.start_agent(local.home)
    wait_for(lambda: f"crash point {point} reached" in local.home.agent_log.read_text(), f"{point} reached")
    wait_for(lambda: not daemon.agent_running(local.home), f"the agent killed at {point} to be gone")
    monkeypatch.delenv(crash_points.ENV)


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (an unreaped zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class LocalSetup:
    """One tmp $LBM_HOME and bucket, and the local backend of a region built from `queues`."""

    root: Path
    queues: list[Queue]
    devices: dict[str, tuple[int, ...]] = field(default_factory=dict)
    slack: SlackSettings | None = None
    backends: list[LocalBackend] = field(default_factory=list)

    @property
    def home(self) -> LocalHome:
        return LocalHome(self.root / "home")

    @property
    def bucket(self) -> Path:
        return self.root / "bucket"

    def region(self, queues: list[Queue] | None = None) -> Region:
        return Region(
            name="local",
            backend="local",
            bucket=f"file://{self.bucket}",
            prefix="outputs",
            queues=list(queues if queues is not None else self.queues),
            devices=self.devices,
            slack=self.slack,
        )

    @property
    def backend(self) -> LocalBackend:
        if not self.backends:
            self.backends.append(LocalBackend(self.region(), self.home.root))
        return self.backends[0]

    def spec(
        self, name: str, code: str, *, owner: str = "ann", queue: str | None = None, **fields
    ) -> JobSpec:
        """A job running `python -c code` (as owner `owner`, share = owner unless given)."""
        queue = queue or self.queues[0].name
        fields.setdefault("share_identifier", owner)
        return JobSpec(
            name=name,
            owner=owner,
            queue=queue,
            command=(sys.executable, "-c", code),
            artifact_uri=f"file://{self.bucket}/outputs/{owner}-lbm/{name}/",
            **fields,
        )

    def insert(self, name: str, code: str, **fields) -> None:
        """Queue a job by writing it in the store directly, so that no agent starts."""
        self.backend.store.save_region("local", self.region().to_dict())
        self.backend.store.insert(self.spec(name, code, **fields), 1, None)

    def submit(self, name: str, code: str, *, secrets: dict[str, str] | None = None, **fields) -> Job:
        return self.backend.submit(self.spec(name, code, **fields), secrets or {})

    def wait_state(self, name: str, states: Iterable[JobState], timeout: float = DEADLINE_S) -> Job:
        wanted = set(states)
        return wait_for(
            lambda: (job := self.backend.describe(name)).state in wanted and job,
            f"job {name} to reach {'/'.join(sorted(wanted))}",
            timeout,
        )

    def wait_ended(self, name: str, timeout: float = DEADLINE_S) -> Job:
        return self.wait_state(name, ENDED, timeout)

    def archive(self, job: Job) -> Path:
        """The job's output.tar.gz in the bucket, once it exists."""
        path = Path(job.artifact_uri.removeprefix("file://")) / "output" / "output.tar.gz"
        wait_for(path.exists, f"the archive of {job.name}")
        return path

    def agent_pid(self) -> int:
        return wait_for(lambda: agent_pid(self.home), "the agent to run")

    def kill_agent(self) -> None:
        """kill -9 the agent and wait until its lock is free."""
        os.kill(self.agent_pid(), signal.SIGKILL)
        wait_for(lambda: not agent_running(self.home), "the killed agent's lock to be released")

    def clean_up(self) -> None:
        if self.home.db.exists():
            store = JobStore(self.home.db)
            for attempt in store.active_attempts():
                signal_attempt(attempt.pid, attempt.pid_started_at, signal.SIGKILL)
            store.close()
        pid = wait_agent_pid(self.home)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not agent_running(self.home), "the agent to exit")
        for backend in self.backends:
            backend.close()
