"""`LocalBackend`: the Backend protocol on this machine, over the SQLite store and the scheduler agent.

Submitting, stopping and following logs start the agent when none runs; listing and describing start it only
when some job still waits or runs (so a job is never left unattended after a reboot).
"""

from __future__ import annotations

import dataclasses
import signal
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lbm.errors import LbmError
from lbm.jobs.backend import unknown_job
from lbm.jobs.local import daemon
from lbm.jobs.local.home import LocalHome, lbm_home
from lbm.jobs.local.store import JobStore
from lbm.jobs.model import Job, JobSpec, JobState, Queue, QueueUsage, StatusReason
from lbm.jobs.region import Region
from lbm.secrets import SECRET_ENV_NAMES

TAIL_LINES = 100
FOLLOW_POLL_S = 0.25


class LocalBackend:
    """Jobs of `region` (a region whose backend is `local`) kept under `home` (default: $LBM_HOME)."""

    RegionSettings = None
    QueueSettings = None

    def __init__(self, region: Region, home: Path | None = None):
        self.home = LocalHome(Path(home) if home is not None else lbm_home())
        self.home.check()
        self.region = region
        self._store: JobStore | None = None
        self._region_saved = False

    @property
    def store(self) -> JobStore:
        """The job store, created when the home has none yet."""
        if self._store is None:
            self._store = JobStore(self.home.db)
        return self._store

    def _existing_store(self) -> JobStore | None:
        """The job store, or None when the home has none (a lookup creates nothing)."""
        if self._store is None and not self.home.db.exists():
            return None
        return self.store

    def _job(self, name: str) -> Job:
        store = self._existing_store()
        if store is None:
            raise unknown_job(name)
        return store.job(name)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # --- queueing ------------------------------------------------------------------------------------------

    def check(self, spec: JobSpec) -> list[str]:
        """LbmError for a job this machine cannot run (several instances, more GPUs than the queue has)."""
        self._slots(self.region.queue(spec.queue), spec)
        return []

    def dry_run(self, spec: JobSpec) -> dict[str, Any]:
        """The JobSpec as the store would keep it."""
        self.check(spec)
        record = dataclasses.asdict(spec)
        record["command"] = list(spec.command)
        return record

    def submit(self, spec: JobSpec, secrets: Mapping[str, str]) -> Job:
        """Queue a job; `secrets` go to the agent's memory and the job's environment, never to the store."""
        leaked = sorted(set(spec.env) & {*SECRET_ENV_NAMES, *secrets})
        if leaked:
            raise LbmError(f"JobSpec.env must not hold secrets ({', '.join(leaked)}); pass them as `secrets`")
        slots = self._slots(self.region.queue(spec.queue), spec)
        if not self._region_saved:
            self.store.save_region(self.region.name, self.region.to_dict())
            self._region_saved = True
        handoff = uuid.uuid4().hex if secrets else None
        if handoff is not None:
            daemon.hand_over(self.home, spec.name, handoff, secrets)
        job = self.store.insert(spec, slots, handoff)
        daemon.ensure_agent(self.home)
        return job

    def _slots(self, queue: Queue, spec: JobSpec) -> int:
        """The capacity the job holds while it runs: one GPU per process on a GPU queue, else one slot.

        A queue with no capacity (0, as AWS Batch allows) takes jobs, which wait RUNNABLE until it has
        some; a job needing more GPUs than the queue could ever give, or several machines, is refused.
        """
        if spec.instance_count != 1:
            raise LbmError(
                f"the local backend runs a job on one machine, not {spec.instance_count} instances; "
                "use a region whose backend runs jobs on several machines"
            )
        devices = self.region.devices.get(queue.instance_type)
        if devices is None:
            return 1
        slots = max(1, spec.nproc_per_node)
        most = min(queue.capacity, len(devices))
        if 0 < most < slots:
            raise LbmError(
                f"job needs {slots} GPUs (--nproc-per-node {spec.nproc_per_node}) but queue {queue.name} "
                f"can give at most {most} {queue.instance_type} GPU{'s' if most > 1 else ''}; "
                f"use --nproc-per-node {most} or less"
            )
        return slots

    def stop(self, name: str, *, reason: str = StatusReason.STOPPED_BY_USER) -> Job:
        """Cancel a queued job (FAILED "cancelled in queue") or stop a running one (FAILED `reason`).

        A running job is signalled at once (SIGTERM to its process group) and turns FAILED when its processes
        are gone (SIGKILL after a grace period); the job is returned as it is now.
        """
        job = self._job(name)
        if job.state.is_terminal:
            raise LbmError(f"job {name} has already ended ({job.state.value}); there is nothing to stop")
        if job.state.is_queued and self.store.cancel_queued(name, StatusReason.CANCELLED_IN_QUEUE):
            daemon.ensure_agent(self.home)
            return self._job(name)
        if self.store.request_stop(name, reason):
            from lbm.jobs.local.processes import signal_attempt

            for attempt in self.store.active_attempts(name):
                signal_attempt(attempt.pid, attempt.pid_started_at, signal.SIGTERM)
        daemon.ensure_agent(self.home)
        return self._job(name)

    # --- looking -------------------------------------------------------------------------------------------

    def describe(self, name: str) -> Job:
        job = self._job(name)
        self._watch([job])
        return job

    def list(
        self,
        *,
        queue: str | None = None,
        states: Iterable[JobState] | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        store = self._existing_store()
        jobs = store.jobs(queue=queue, states=states, owner=owner, limit=limit) if store else []
        self._watch(jobs)
        return jobs

    def usage(self) -> list[QueueUsage]:
        store = self._existing_store()
        counts = store.counts() if store else {}
        return [
            QueueUsage(q.name, q.instance_type, *counts.get(q.name, (0, 0)), capacity=q.capacity)
            for q in self.region.queues
        ]

    def queues(self) -> list[Queue]:
        return list(self.region.queues)

    def logs(self, name: str, *, from_head: bool = False, follow: bool = False) -> Iterator[str]:
        """Lines (without their newline) of the job's attempt logs, oldest attempt first.

        The last TAIL_LINES lines, or all with `from_head`; with `follow`, keep yielding new lines (and the
        next attempt's) until the job has ended and everything is read.
        """
        job = self._job(name)
        if follow and not job.state.is_terminal:
            daemon.ensure_agent(self.home)
        paths = self._log_paths(job)
        offset = 0
        if from_head:
            for path in paths[:-1]:
                yield from _read_lines(path)
        else:
            lines, offset = _tail(paths, TAIL_LINES)
            yield from lines
        if not follow:
            if from_head and paths:
                yield from _read_lines(paths[-1])
            return
        current = paths[-1] if paths else None
        pending = b""
        while True:
            job = self._job(name)
            paths = self._log_paths(job)
            if current is None and paths:
                current, offset = paths[0], 0
            if current is not None:
                chunk = _read_from(current, offset)
                offset += len(chunk)
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
                later = paths[paths.index(current) + 1 :] if current in paths else []
                if later and not chunk:
                    if pending:
                        yield pending.decode(errors="replace")
                        pending = b""
                    current, offset = later[0], 0
                    continue
                if chunk:
                    continue
            if job.state.is_terminal:
                if pending:
                    yield pending.decode(errors="replace")
                return
            time.sleep(FOLLOW_POLL_S)

    def _log_paths(self, job: Job) -> list[Path]:
        return [Path(a.log_uri) for a in job.attempts if a.log_uri]

    def _watch(self, jobs: list[Job]) -> None:
        """Start the agent if some of these jobs wait or run and no agent looks after them."""
        if any(not j.state.is_terminal for j in jobs) and not daemon.agent_running(self.home):
            daemon.start_agent(self.home)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read()
    except FileNotFoundError:
        return b""


def _read_lines(path: Path) -> Iterator[str]:
    try:
        with open(path, "rb") as file:
            for line in file:
                yield line.rstrip(b"\n").decode(errors="replace")
    except FileNotFoundError:
        return


def _tail(paths: list[Path], count: int) -> tuple[list[str], int]:
    """The last `count` lines across the files, read backwards (large logs stay cheap), and the size of the
    last file when it was read (where following it goes on from)."""
    lines: deque[str] = deque()
    end = 0
    for position, path in enumerate(reversed(paths)):
        found, size = _file_tail(path, count - len(lines))
        end = size if position == 0 else end
        for line in found:
            lines.appendleft(line)
        if len(lines) >= count:
            break
    return list(lines), end


def _file_tail(path: Path, count: int) -> tuple[list[str], int]:
    """The last `count` lines of one file, last line first, and the file's size when read."""
    data = b""
    end = 0
    try:
        with open(path, "rb") as file:
            position = end = file.seek(0, 2)
            while position > 0 and data.count(b"\n") <= count:
                step = min(65536, position)
                position -= step
                file.seek(position)
                data = file.read(step) + data
    except FileNotFoundError:
        return [], 0
    if count <= 0:
        return [], end
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if position > 0:
        lines = lines[1:]
    return [line.decode(errors="replace") for line in reversed(lines[-count:])], end
