"""The backend contract: what every backend (local, SageMaker, Slurm) does, whatever its engine, Slack
notifications through `lbm.jobs.watcher` included.

A backend's test module subclasses `BackendContract` and gives a `contract` fixture: a `ContractDriver`
for that engine. The driver makes job specs whose run the test decides (`outcome`: "succeed", "fail", or
"hold" until `release`), and reads the environment the engine gave a job when the engine can show it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import pytest

import polling
from lbm.errors import LbmError
from lbm.jobs.backend import Backend, JobNameTaken
from lbm.jobs.environment import ARTIFACT_URI, ATTEMPT, CONFIG_URI, JOB_NAME, OUTPUT_DIR
from lbm.jobs.model import Job, JobSpec, JobState
from lbm.jobs.region import Region
from lbm.jobs.watcher import JobWatcher
from lbm.notify.slack import SlackNotifier
from webhook import serving_webhook

ORDER = list(JobState)
DEADLINE_S = 120.0


class ContractDriver(Protocol):
    backend: Backend
    region: Region
    held_queue: str  # a queue of the region whose jobs wait (no free capacity) until stopped

    def spec(
        self, name: str, *, outcome: str = "succeed", owner: str = "ann", queue: str | None = None
    ) -> JobSpec:
        """A job in `queue` (default: the region's first) that prints `contract job <name>`, then succeeds,
        fails (exit 3) or holds."""

    def release(self, name: str) -> None:
        """Let a held job finish (it succeeds)."""

    def environment(self, name: str) -> dict[str, str] | None:
        """The environment the engine gave the running job `name` (None: this engine cannot show it)."""


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


class ProcessDriver:
    """The driver's job side for an engine that runs the spec's command on a host sharing `root` with the
    test (local, Slurm): PROGRAM, released through a file, its environment read back from a file.
    Subclasses set `backend`, `region` and `held_queue`."""

    def __init__(self, root: Path):
        self.root = root

    def _release_path(self, name: str) -> Path:
        return self.root / f"release-{name}"

    def spec(
        self, name: str, *, outcome: str = "succeed", owner: str = "ann", queue: str | None = None
    ) -> JobSpec:
        return JobSpec(
            name=name,
            owner=owner,
            queue=queue or self.region.queues[0].name,
            command=(sys.executable, "-c", PROGRAM, name, outcome, str(self._release_path(name))),
            artifact_uri=f"file://{self.root}/bucket/outputs/{owner}-lbm/{name}/",
            share_identifier=owner,
        )

    def release(self, name: str) -> None:
        self._release_path(name).touch()

    def environment(self, name: str) -> dict[str, str] | None:
        path = Path(f"{self._release_path(name)}.env")
        return json.loads(path.read_text()) if path.exists() else None


def wait_state(driver: ContractDriver, name: str, states: Iterable[JobState], seen: list[JobState]) -> Job:
    """Poll until the job is in one of `states`, recording each state seen (in order) in `seen`."""
    wanted = set(states)

    def reached() -> Job | None:
        job = driver.backend.describe(name)
        if not seen or seen[-1] is not job.state:
            seen.append(job.state)
        return job if job.state in wanted else None

    return polling.wait_for(reached, f"job {name} to reach {'/'.join(sorted(wanted))}", DEADLINE_S, 0.05)


def in_lifecycle_order(states: list[JobState]) -> bool:
    """Each state comes later in SUBMITTED..RUNNING..ended than the one before (a retry may go back)."""
    return all(ORDER.index(b) > ORDER.index(a) for a, b in zip(states, states[1:], strict=False))


class BackendContract:
    """Tests every backend passes; subclasses give the `contract` fixture (a ContractDriver)."""

    def test_a_job_runs_to_succeeded_through_the_states_in_order(self, contract: ContractDriver):
        spec = contract.spec("ann-ok")
        submitted = contract.backend.submit(spec, {})
        assert (submitted.name, submitted.owner, submitted.queue) == ("ann-ok", "ann", spec.queue)
        assert submitted.artifact_uri == spec.artifact_uri and not submitted.state.is_terminal
        seen: list[JobState] = [submitted.state]
        job = wait_state(contract, "ann-ok", [JobState.SUCCEEDED, JobState.FAILED], seen)
        assert job.state is JobState.SUCCEEDED, job.status_reason
        assert in_lifecycle_order(seen), seen
        assert job.started_at is not None and job.stopped_at is not None and job.stopped_at >= job.started_at
        assert len(job.attempts) == 1

    def test_a_failing_job_ends_failed_with_a_reason(self, contract: ContractDriver):
        contract.backend.submit(contract.spec("ann-bad", outcome="fail"), {})
        job = wait_state(contract, "ann-bad", [JobState.SUCCEEDED, JobState.FAILED], [])
        assert job.state is JobState.FAILED and job.status_reason

    def test_logs_hold_the_jobs_output(self, contract: ContractDriver):
        contract.backend.submit(contract.spec("ann-says"), {})
        wait_state(contract, "ann-says", [JobState.SUCCEEDED, JobState.FAILED], [])
        assert any(
            "contract job ann-says" in line for line in contract.backend.logs("ann-says", from_head=True)
        )

    def test_a_running_job_gets_the_job_environment(self, contract: ContractDriver):
        spec = contract.spec("ann-env", outcome="hold")
        contract.backend.submit(spec, {})
        wait_state(contract, "ann-env", [JobState.RUNNING], [])
        env = contract.environment("ann-env")
        if env is not None:
            assert env[JOB_NAME] == "ann-env" and env[ATTEMPT] == "0"
            assert env[ARTIFACT_URI] == spec.artifact_uri
            assert env[CONFIG_URI] == f"{spec.artifact_uri}config.yaml"
            assert env[OUTPUT_DIR]
        contract.release("ann-env")
        assert (
            wait_state(contract, "ann-env", [JobState.SUCCEEDED, JobState.FAILED], []).state
            is JobState.SUCCEEDED
        )

    def test_stopping_a_running_job_ends_it_failed_stopped_by_user(self, contract: ContractDriver):
        contract.backend.submit(contract.spec("ann-long", outcome="hold"), {})
        wait_state(contract, "ann-long", [JobState.RUNNING], [])
        contract.backend.stop("ann-long", reason="stopped by user")
        job = wait_state(contract, "ann-long", [JobState.SUCCEEDED, JobState.FAILED], [])
        assert (job.state, job.status_reason) == (JobState.FAILED, "stopped by user")

    def test_cancelling_a_queued_job_ends_it_without_running(self, contract: ContractDriver):
        contract.backend.submit(contract.spec("ann-wait", outcome="hold", queue=contract.held_queue), {})
        assert contract.backend.describe("ann-wait").state.is_queued
        contract.backend.stop("ann-wait", reason="cancelled in queue")
        job = wait_state(contract, "ann-wait", [JobState.SUCCEEDED, JobState.FAILED], [])
        assert (job.state, job.status_reason) == (JobState.FAILED, "cancelled in queue")
        assert job.started_at is None

    def test_list_filters_by_queue_state_and_owner_newest_first(self, contract: ContractDriver):
        contract.backend.submit(contract.spec("ann-1"), {})
        wait_state(contract, "ann-1", [JobState.SUCCEEDED], [])
        contract.backend.submit(contract.spec("bob-2", owner="bob", outcome="hold"), {})
        wait_state(contract, "bob-2", [JobState.RUNNING], [])
        names = [j.name for j in contract.backend.list()]
        assert names.index("bob-2") < names.index("ann-1")
        assert [j.name for j in contract.backend.list(owner="bob")] == ["bob-2"]
        assert "ann-1" in [j.name for j in contract.backend.list(states=[JobState.SUCCEEDED])]
        assert "bob-2" not in [j.name for j in contract.backend.list(states=[JobState.SUCCEEDED])]
        queue = contract.region.queues[0].name
        assert {j.queue for j in contract.backend.list(queue=queue)} == {queue}
        assert len(contract.backend.list(limit=1)) == 1
        contract.release("bob-2")
        wait_state(contract, "bob-2", [JobState.SUCCEEDED], [])

    def test_usage_and_queues_follow_the_site(self, contract: ContractDriver):
        assert [q.name for q in contract.backend.queues()] == [q.name for q in contract.region.queues]
        usage = {u.queue: u for u in contract.backend.usage()}
        for queue in contract.region.queues:
            assert usage[queue.name].capacity == queue.capacity
            assert usage[queue.name].instance_type == queue.instance_type

    def test_unknown_jobs_and_taken_names_are_user_errors(self, contract: ContractDriver):
        for call in (
            lambda: contract.backend.describe("nobody-here"),
            lambda: contract.backend.stop("nobody-here", reason="stopped by user"),
            lambda: list(contract.backend.logs("nobody-here")),
        ):
            with pytest.raises(LbmError, match="nobody-here"):
                call()
        contract.backend.submit(contract.spec("ann-twice"), {})
        with pytest.raises(JobNameTaken):
            contract.backend.submit(contract.spec("ann-twice"), {})
        wait_state(contract, "ann-twice", [JobState.SUCCEEDED], [])

    def test_the_watcher_posts_each_running_and_failed_once(self, contract: ContractDriver, tmp_path: Path):
        with serving_webhook() as hook:
            notifier = SlackNotifier(hook.url, ("RUNNING", "FAILED"))
            watcher = JobWatcher(contract.backend, notifier, tmp_path / "watch.sqlite")
            watcher.poll()  # a new watcher starts from the jobs as it finds them
            spec = contract.spec("ann-watched", outcome="hold")
            contract.backend.submit(spec, {})
            wait_state(contract, "ann-watched", [JobState.RUNNING], [])
            watcher.poll()
            contract.backend.stop("ann-watched", reason="stopped by user")
            wait_state(contract, "ann-watched", [JobState.FAILED], [])
            watcher.poll()
            watcher.poll()
            watcher.close()
            assert [payload["text"].splitlines()[0] for payload in hook.payloads] == [
                f"Job ann-watched is RUNNING (owner ann, queue {spec.queue})",
                f"Job ann-watched is FAILED (owner ann, queue {spec.queue}): stopped by user",
            ]

    def test_a_dry_run_sends_nothing(self, contract: ContractDriver):
        request = contract.backend.dry_run(contract.spec("ann-dry"))
        assert request
        with pytest.raises(LbmError, match="ann-dry"):
            contract.backend.describe("ann-dry")
