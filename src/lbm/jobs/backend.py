"""The protocol every backend (local, SageMaker through AWS Batch, Slurm) implements."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from lbm.errors import LbmError
from lbm.jobs.model import Job, JobSpec, JobState, Queue, QueueUsage


class JobNameTaken(LbmError):
    """`submit` was given a name that a job already has."""


class Backend(Protocol):
    """Queue, watch and stop training jobs on one engine.

    Unknown job or queue names raise `lbm.errors.LbmError`.
    """

    def submit(self, spec: JobSpec, secrets: Mapping[str, str]) -> Job:
        """Queue a job. `secrets` reach the job's environment and nothing else."""

    def describe(self, name: str) -> Job:
        """The job called `name`."""

    def list(
        self,
        *,
        queue: str | None = None,
        states: Iterable[JobState] | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs, newest first, filtered by queue, states and owner."""

    def logs(self, name: str, *, from_head: bool = False, follow: bool = False) -> Iterator[str]:
        """Lines of the job's log: the tail (or all with `from_head`), following while it runs."""

    def stop(self, name: str, *, reason: str) -> Job:
        """Cancel a queued job or stop a running one; it ends FAILED with `reason`."""

    def usage(self) -> list[QueueUsage]:
        """Running and pending jobs against capacity, per queue."""

    def queues(self) -> list[Queue]:
        """The queues this backend serves."""
