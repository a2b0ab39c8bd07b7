"""The job model shared by every backend: states as AWS Batch names them, jobs, attempts, queues."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class JobState(enum.StrEnum):
    """A job's lifecycle, in the order a job moves through it (the seed's Batch states)."""

    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNABLE = "RUNNABLE"
    SCHEDULED = "SCHEDULED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)

    @property
    def is_queued(self) -> bool:
        """Waiting in a queue: can be cancelled there without stopping any process."""
        return self in (JobState.SUBMITTED, JobState.PENDING, JobState.RUNNABLE)


class StatusReason:
    """The status reasons a backend records for why a job or attempt ended."""

    STOPPED_BY_USER = "stopped by user"
    CANCELLED_IN_QUEUE = "cancelled in queue"
    TIMED_OUT = "timed out"
    AGENT_LOST = "agent lost the attempt"

    @staticmethod
    def exit_code(code: int) -> str:
        return f"exit code {code}"


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to queue and run one training job (built by `lbm.launch`).

    `command` is the argv of the workload (e.g. `lbm train --config-file ...`); secrets are
    never part of a JobSpec: a backend gets them separately and keeps them out of its records.
    """

    name: str
    owner: str
    queue: str
    command: tuple[str, ...]
    artifact_uri: str
    share_identifier: str
    priority: int = 0
    instance_type: str = "cpu"
    instance_count: int = 1
    nproc_per_node: int = 1
    max_runtime_s: float | None = None
    retries: int = 0
    region: str = "local"
    image_uri: str | None = None
    task_name: str | None = None
    team: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    resolved_config: str = ""
    owner_email: str | None = None


@dataclass
class Attempt:
    """One try at running a job; `engine_resource` is what the engine ran it as (a training job ARN)."""

    index: int
    started_at: float | None = None
    stopped_at: float | None = None
    exit_code: int | None = None
    status_reason: str | None = None
    host: str | None = None
    log_uri: str | None = None
    engine_resource: str | None = None


@dataclass
class Job:
    """A job as a backend reports it; `engine_id` is the engine's own id (Batch jobId, Slurm job id).

    `transitions` are the states it has been in with when it entered each, oldest first, from a backend that
    keeps them (`describe`); timestamps are Unix seconds.
    """

    spec: JobSpec
    state: JobState
    created_at: float
    status_reason: str | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    engine_id: str | None = None
    transitions: list[tuple[JobState, float]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def owner(self) -> str:
        return self.spec.owner

    @property
    def queue(self) -> str:
        return self.spec.queue

    @property
    def artifact_uri(self) -> str:
        return self.spec.artifact_uri


@dataclass(frozen=True)
class Queue:
    """A job queue: one instance type, a capacity in instances, a fair-share policy.

    `fair_share` says the site gave the queue a `fairShare` policy (the local agent schedules every queue
    by fair share; AWS Batch only those that have one); `settings` is the backend's own block for the queue.
    """

    name: str
    instance_type: str
    capacity: int
    team: str | None = None
    share_decay_seconds: float = 3600.0
    compute_reservation: float = 0.0
    weight_factors: dict[str, float] = field(default_factory=dict)
    fair_share: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueUsage:
    """Instances in use and jobs waiting on one queue, against its capacity (quota)."""

    queue: str
    instance_type: str
    running: int
    pending: int
    capacity: int
