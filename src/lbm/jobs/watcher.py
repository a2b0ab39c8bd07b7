"""Tell Slack about the jobs of any backend: poll it, and post each job's RUNNING, FAILED or SUCCEEDED once.

The local agent posts its own transitions as they happen; for a backend whose engine runs the jobs (AWS
Batch, Slurm) this watcher does it, from whatever machine runs `lbm watch`. What was posted is kept in a
small SQLite file, so a restarted watcher does not post again, and a new one starts from the jobs' states as
it first finds them (it posts what changes after that, not the past).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from lbm.jobs.backend import Backend
from lbm.jobs.model import Job, JobState
from lbm.notify.slack import JobEvent, SlackNotifier

log = logging.getLogger(__name__)

NOT_TERMINAL = tuple(state for state in JobState if not state.is_terminal)
TERMINAL = (JobState.SUCCEEDED, JobState.FAILED)
# The newest ended jobs looked at per poll (a job ends at most once between two polls).
RECENT_ENDED = 200


class JobWatcher:
    """Posts the transitions of `backend`'s jobs to `notifier`; `state_path` remembers what was posted."""

    def __init__(self, backend: Backend, notifier: SlackNotifier, state_path: Path):
        self.backend = backend
        self.notifier = notifier
        state_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(state_path, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (job TEXT PRIMARY KEY, state TEXT NOT NULL)")
        self._first = self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0] == 0

    def close(self) -> None:
        self._db.close()

    def poll(self) -> list[JobEvent]:
        """One look at the backend; the events posted (or attempted)."""
        ended = self.backend.list(states=TERMINAL, limit=RECENT_ENDED)
        jobs = [*self.backend.list(states=NOT_TERMINAL), *ended]
        seen = dict(self._db.execute("SELECT job, state FROM seen").fetchall())
        events = []
        for job in jobs:
            if seen.get(job.name) == job.state.value:
                continue
            self._db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?)", (job.name, job.state.value))
            if self._first or not self.notifier.wants(job.state.value):
                continue
            event = _event(job)
            self.notifier.send(event)
            events.append(event)
        self._first = False
        return events

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """Poll every `interval_s` seconds until `stop` is set; a failed poll is logged and retried."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception as error:  # noqa: BLE001 - the engine may be unreachable for a while
                log.warning("polling for job states failed: %s; retrying in %.0f s", error, interval_s)
            stop.wait(interval_s)


def _event(job: Job) -> JobEvent:
    reason = job.status_reason if job.state is JobState.FAILED else None
    return JobEvent(job.name, job.owner, job.queue, job.state.value, reason, job.artifact_uri)
