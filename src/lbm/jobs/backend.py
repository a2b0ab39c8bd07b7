"""The protocol every backend (local, SageMaker through AWS Batch, Slurm) implements."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from lbm.errors import LbmError
from lbm.jobs.model import Job, JobSpec, JobState, Queue, QueueUsage

if TYPE_CHECKING:
    from pydantic import BaseModel

    from lbm.jobs.region import Region


class JobNameTaken(LbmError):
    """`submit` was given a name that a job already has."""


def unknown_job(name: str) -> LbmError:
    """What a backend raises for a job name it does not know."""
    return LbmError(f"no job named {name!r} (list jobs with `sagey ls`)")


class Backend(Protocol):
    """Queue, watch and stop training jobs on one engine, for one site region: `Backend(region)`.

    `RegionSettings` and `QueueSettings` are the pydantic models of the backend's own blocks in the site file
    (None: it has none); the site validates them and keeps their JSON-able dump in `Region.settings` and
    `Queue.settings`. A backend may offer a built-in site, `builtin_site()` (a classmethod returning a
    `Site`), which `LBM_SITE=<backend name>` selects. Unknown job or queue names raise `lbm.errors.LbmError`.
    """

    RegionSettings: ClassVar[type[BaseModel] | None]
    QueueSettings: ClassVar[type[BaseModel] | None]

    def __init__(self, region: Region) -> None: ...

    def check(self, spec: JobSpec) -> list[str]:
        """Notes for the user about this job; LbmError for what the engine would refuse. Changes nothing."""

    def dry_run(self, spec: JobSpec) -> dict[str, Any]:
        """The request `submit` would send for this job (secrets left out), without sending anything."""

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
