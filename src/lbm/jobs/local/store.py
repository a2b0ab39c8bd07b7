"""The local backend's job store: one SQLite file (WAL) shared by submitters, stoppers and the agent.

Jobs keep their JobSpec as JSON (never secrets); attempts keep the runner's pid and start time so a restarted
agent can find them again. Writes are short `BEGIN IMMEDIATE` transactions whose updates check the state they
expect, so the agent and a stopper never both win a race.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbm.errors import LbmError
from lbm.jobs.backend import JobNameTaken, unknown_job
from lbm.jobs.crash_points import CrashPoints
from lbm.jobs.local.fair_share import QueuedJob
from lbm.jobs.model import Attempt, Job, JobSpec, JobState

QUEUED = (JobState.SUBMITTED, JobState.PENDING, JobState.RUNNABLE)
ACTIVE = (JobState.STARTING, JobState.RUNNING)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    queue TEXT NOT NULL,
    share TEXT NOT NULL,
    priority INTEGER NOT NULL,
    slots INTEGER NOT NULL,
    state TEXT NOT NULL,
    status_reason TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    stopped_at REAL,
    spec TEXT NOT NULL,
    handoff TEXT,
    stop_reason TEXT,
    archived INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, queue);
CREATE INDEX IF NOT EXISTS jobs_by_state_seq ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner);
CREATE INDEX IF NOT EXISTS jobs_unarchived ON jobs (archived, state);
CREATE TABLE IF NOT EXISTS attempts (
    job TEXT NOT NULL,
    idx INTEGER NOT NULL,
    slots INTEGER NOT NULL,
    started_at REAL,
    stopped_at REAL,
    exit_code INTEGER,
    status_reason TEXT,
    pid INTEGER,
    pid_started_at REAL,
    devices TEXT NOT NULL DEFAULT '',
    host TEXT,
    log_path TEXT,
    PRIMARY KEY (job, idx)
);
CREATE INDEX IF NOT EXISTS attempts_by_stop ON attempts (stopped_at);
CREATE TABLE IF NOT EXISTS regions (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, state TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS outbox_on_state AFTER UPDATE OF state ON jobs
    WHEN NEW.state IN ('RUNNING', 'FAILED', 'SUCCEEDED') AND NEW.state != OLD.state
    BEGIN INSERT INTO outbox (job, state) VALUES (NEW.name, NEW.state); END;
CREATE TABLE IF NOT EXISTS transitions (job TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_by_job ON transitions (job);
CREATE TRIGGER IF NOT EXISTS transitions_on_insert AFTER INSERT ON jobs
    BEGIN INSERT INTO transitions VALUES (NEW.name, NEW.state, NEW.created_at); END;
CREATE TRIGGER IF NOT EXISTS transitions_on_state AFTER UPDATE OF state ON jobs WHEN NEW.state != OLD.state
    BEGIN INSERT INTO transitions VALUES (NEW.name, NEW.state, (julianday('now') - 2440587.5) * 86400.0); END;
"""
# The object SCHEMA added last: a store without it (new, or made by an older lbm) gets SCHEMA run on it.
NEWEST_OBJECT = "transitions_on_state"


class StoreDamaged(LbmError):
    """The store file is not a sound SQLite database: nothing more is read from or written to it."""


_DAMAGED = (
    "is damaged; lbm leaves it as it is: restore it from a backup or move it aside to start an empty one"
)
DAMAGED_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
# What a user is told when SQLite fails with one of these primary result codes (others are bugs).
STORE_PROBLEMS = {
    sqlite3.SQLITE_FULL: "cannot grow: its disk is full; free some space and try again (nothing was written)",
    sqlite3.SQLITE_CORRUPT: _DAMAGED,
    sqlite3.SQLITE_NOTADB: _DAMAGED,
    sqlite3.SQLITE_READONLY: "cannot be written; check the permissions of it and its folder",
    sqlite3.SQLITE_CANTOPEN: "cannot be opened; check the permissions of it and its folder",
    sqlite3.SQLITE_IOERR: "cannot be read or written (an I/O error: is its disk full or failing?)",
}


@dataclass(frozen=True)
class ActiveAttempt:
    """The current attempt of a STARTING or RUNNING job, as the agent needs it."""

    job: str
    index: int
    spec: JobSpec
    started_at: float | None
    pid: int | None
    pid_started_at: float | None
    status_reason: str | None
    stop_reason: str | None


def spec_to_json(spec: JobSpec) -> str:
    return json.dumps(dataclasses.asdict(spec), sort_keys=True)


_SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(JobSpec))


def spec_from_json(text: str) -> JobSpec:
    values = {k: v for k, v in json.loads(text).items() if k in _SPEC_FIELDS}
    values["command"] = tuple(values["command"])
    return JobSpec(**values)


class JobStore:
    """Jobs and attempts in $LBM_HOME/jobs.sqlite; the agent's store reaches its crash points."""

    def __init__(self, path: Path, crash_points: CrashPoints | None = None):
        self.path = path
        self.crash_points = crash_points or CrashPoints()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._errors():
            self._db.execute("PRAGMA busy_timeout = 60000")
            if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            newest = self._db.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (NEWEST_OBJECT,))
            if newest.fetchone()[0] == 0:
                self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def check_integrity(self) -> None:
        """StoreDamaged when SQLite's quick check of the whole file finds a problem (it reads every page)."""
        with self._errors():
            found = [row[0] for row in self._db.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            raise StoreDamaged(f"the job store {self.path} {_DAMAGED} ({found[0]})")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite failures a user can act on (full disk, damaged file, permissions) as one-line LbmErrors."""
        try:
            yield
        except sqlite3.DatabaseError as error:
            code = getattr(error, "sqlite_errorcode", -1) & 0xFF
            if code not in STORE_PROBLEMS:
                raise
            kind = StoreDamaged if code in DAMAGED_CODES else LbmError
            raise kind(f"the job store {self.path} {STORE_PROBLEMS[code]} ({error})") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        with self._transaction():
            return self._db.execute(sql, tuple(params)).rowcount

    # --- regions (queue definitions the agent schedules against) --------------------------------------------

    def save_region(self, name: str, data: dict[str, Any]) -> None:
        text = json.dumps(data, sort_keys=True)
        row = self._db.execute("SELECT data FROM regions WHERE name = ?", (name,)).fetchone()
        if row is None or row["data"] != text:
            self._write("INSERT OR REPLACE INTO regions (name, data) VALUES (?, ?)", (name, text))

    def regions(self) -> dict[str, dict[str, Any]]:
        with self._errors():
            return {
                r["name"]: json.loads(r["data"]) for r in self._db.execute("SELECT name, data FROM regions")
            }

    # --- submitters and stoppers ---------------------------------------------------------------------------

    def insert(self, spec: JobSpec, slots: int, handoff: str | None) -> Job:
        now = time.time()
        try:
            self._write(
                "INSERT INTO jobs (name, owner, queue, share, priority, slots, state, created_at, spec,"
                " handoff) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    spec.name,
                    spec.owner,
                    spec.queue,
                    spec.share_identifier,
                    spec.priority,
                    slots,
                    JobState.SUBMITTED.value,
                    now,
                    spec_to_json(spec),
                    handoff,
                ),
            )
        except sqlite3.IntegrityError:
            raise JobNameTaken(f"a job named {spec.name!r} already exists") from None
        return Job(spec=spec, state=JobState.SUBMITTED, created_at=now)

    def job(self, name: str) -> Job:
        """The job with every state it has been in (`Job.transitions`)."""
        jobs = self._jobs("WHERE name = ?", [name])
        if not jobs:
            raise unknown_job(name)
        with self._errors():
            rows = self._db.execute(
                "SELECT state, at FROM transitions WHERE job = ? ORDER BY rowid", (name,)
            ).fetchall()
        jobs[0].transitions = [(JobState(r["state"]), r["at"]) for r in rows]
        return jobs[0]

    def jobs(
        self,
        *,
        queue: str | None = None,
        states: Iterable[JobState] | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        clauses, params = [], []
        if queue is not None:
            clauses.append("queue = ?")
            params.append(queue)
        if owner is not None:
            clauses.append("owner = ?")
            params.append(owner)
        if states is not None:
            wanted = [JobState(s).value for s in states]
            if not wanted:
                return []
            clauses.append(f"state IN ({', '.join('?' * len(wanted))})")
            params += wanted
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._jobs(where, params, limit)

    def _jobs(self, where: str, params: list[Any], limit: int | None = None) -> list[Job]:
        with self._errors():
            return self._read_jobs(where, params, limit)

    def _read_jobs(self, where: str, params: list[Any], limit: int | None) -> list[Job]:
        tail = f"{where} ORDER BY seq DESC" + (" LIMIT ?" if limit is not None else "")
        args = [*params, limit] if limit is not None else params
        rows = self._db.execute(f"SELECT * FROM jobs {tail}", args).fetchall()
        attempts: dict[str, list[Attempt]] = {}
        for a in self._db.execute(
            f"SELECT * FROM attempts WHERE job IN (SELECT name FROM jobs {tail}) ORDER BY job, idx", args
        ):
            attempts.setdefault(a["job"], []).append(
                Attempt(
                    index=a["idx"],
                    started_at=a["started_at"],
                    stopped_at=a["stopped_at"],
                    exit_code=a["exit_code"],
                    status_reason=a["status_reason"],
                    host=a["host"],
                    log_uri=a["log_path"],
                )
            )
        return [
            Job(
                spec=spec_from_json(r["spec"]),
                state=JobState(r["state"]),
                created_at=r["created_at"],
                status_reason=r["status_reason"],
                started_at=r["started_at"],
                stopped_at=r["stopped_at"],
                attempts=attempts.get(r["name"], []),
            )
            for r in rows
        ]

    def outbox(self) -> list[tuple[int, str, JobState]]:
        """(id, job, state) of each RUNNING, FAILED or SUCCEEDED a job reached and nobody has told yet, oldest
        first: written with the state itself (a trigger), so a notification lost in a crash is still owed."""
        with self._errors():
            rows = self._db.execute("SELECT seq, job, state FROM outbox ORDER BY seq").fetchall()
        return [(r["seq"], r["job"], JobState(r["state"])) for r in rows]

    def told(self, seq: int) -> None:
        """The outbox entry `seq` has been dealt with."""
        self._write("DELETE FROM outbox WHERE seq = ?", (seq,))

    def cancel_queued(self, name: str, reason: str) -> bool:
        """Queued → FAILED with `reason`; False when the job was no longer queued."""
        marks = ", ".join("?" * len(QUEUED))
        return bool(
            self._write(
                "UPDATE jobs SET state = ?, status_reason = ?, stopped_at = ?"
                f" WHERE name = ? AND state IN ({marks})",
                (JobState.FAILED.value, reason, time.time(), name, *(s.value for s in QUEUED)),
            )
        )

    def request_stop(self, name: str, reason: str) -> bool:
        """Record that a starting or running job must stop; False when it was not starting or running."""
        marks = ", ".join("?" * len(ACTIVE))
        return bool(
            self._write(
                "UPDATE jobs SET stop_reason = coalesce(stop_reason, ?)"
                f" WHERE name = ? AND state IN ({marks})",
                (reason, name, *(s.value for s in ACTIVE)),
            )
        )

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per queue: (instances held by starting or running jobs, queued jobs)."""
        with self._errors():
            rows = self._db.execute(
                "SELECT queue, sum(CASE WHEN state IN (?, ?) THEN slots ELSE 0 END) AS held,"
                " sum(CASE WHEN state IN (?, ?, ?) THEN 1 ELSE 0 END) AS waiting FROM jobs"
                " WHERE state IN (?, ?, ?, ?, ?) GROUP BY queue",
                [s.value for s in (*ACTIVE, *QUEUED)] * 2,
            ).fetchall()
        return {row["queue"]: (row["held"], row["waiting"]) for row in rows}

    def active_attempts(self, name: str | None = None) -> list[ActiveAttempt]:
        """The current attempts of starting or running jobs (of job `name` only, if given)."""
        sql = (
            "SELECT j.name, j.spec, j.stop_reason, a.idx, a.started_at, a.pid, a.pid_started_at,"
            " a.status_reason FROM jobs j JOIN attempts a ON a.job = j.name"
            " AND a.idx = (SELECT max(idx) FROM attempts WHERE job = j.name)"
            " WHERE j.state IN (?, ?)"
        )
        params: list[Any] = [s.value for s in ACTIVE]
        if name is not None:
            sql += " AND j.name = ?"
            params.append(name)
        with self._errors():
            rows = self._db.execute(sql, params).fetchall()
        return [
            ActiveAttempt(
                job=r["name"],
                index=r["idx"],
                spec=spec_from_json(r["spec"]),
                started_at=r["started_at"],
                pid=r["pid"],
                pid_started_at=r["pid_started_at"],
                status_reason=r["status_reason"],
                stop_reason=r["stop_reason"],
            )
            for r in rows
        ]

    # --- the agent -----------------------------------------------------------------------------------------

    def promote_submitted(self) -> int:
        """SUBMITTED → RUNNABLE (local jobs have no dependencies to wait on); how many were promoted."""
        submitted = JobState.SUBMITTED.value
        if self._db.execute("SELECT 1 FROM jobs WHERE state = ? LIMIT 1", (submitted,)).fetchone() is None:
            return 0
        return self._write("UPDATE jobs SET state = ? WHERE state = ?", (JobState.RUNNABLE.value, submitted))

    def runnable(self, queue: str) -> list[QueuedJob]:
        return [
            QueuedJob(
                name=r["name"], share=r["share"], priority=r["priority"], seq=r["seq"], slots=r["slots"]
            )
            for r in self._db.execute(
                "SELECT name, share, priority, seq, slots FROM jobs WHERE queue = ? AND state = ?",
                (queue, JobState.RUNNABLE.value),
            )
        ]

    def held_by_share(self, queue: str) -> dict[str, int]:
        """Instances held now in `queue`, per share identifier."""
        return {
            r["share"]: r["held"]
            for r in self._db.execute(
                "SELECT share, sum(slots) AS held FROM jobs"
                " WHERE queue = ? AND state IN (?, ?) GROUP BY share",
                (queue, *(s.value for s in ACTIVE)),
            )
        }

    def usage_intervals(self, queue: str, since: float) -> list[tuple[str, float, float | None, int]]:
        """(share, start, stop or None, instances) of attempts in `queue` running or stopped after `since`."""
        return [
            (r["share"], r["started_at"], r["stopped_at"], r["slots"])
            for r in self._db.execute(
                "SELECT j.share, a.started_at, a.stopped_at, a.slots"
                " FROM attempts a JOIN jobs j ON a.job = j.name WHERE j.queue = ?"
                " AND a.started_at IS NOT NULL AND (a.stopped_at IS NULL OR a.stopped_at > ?)",
                (queue, since),
            )
        ]

    def active_shares(self, queue: str, since: float) -> set[str]:
        """Shares of `queue` with jobs SUBMITTED through RUNNING, or whose last job ended after `since`."""
        return {
            r["share"]
            for r in self._db.execute(
                "SELECT DISTINCT share FROM jobs"
                " WHERE queue = ? AND (state IN (?, ?, ?, ?, ?) OR stopped_at > ?)",
                (queue, *(s.value for s in (*QUEUED, *ACTIVE)), since),
            )
        }

    def busy_devices(self) -> set[int]:
        busy: set[int] = set()
        for row in self._db.execute(
            "SELECT a.devices FROM attempts a JOIN jobs j ON a.job = j.name"
            " WHERE j.state IN (?, ?) AND a.stopped_at IS NULL AND a.devices != ''",
            [s.value for s in ACTIVE],
        ):
            busy.update(int(d) for d in row["devices"].split(","))
        return busy

    def begin_attempt(
        self, name: str, log_path: Callable[[int], Path], devices: list[int], host: str
    ) -> tuple[JobSpec, int, str | None]:
        """RUNNABLE → STARTING with a new attempt row; (spec, attempt index, hand-over token).

        Raises LookupError when the job is no longer RUNNABLE (cancelled meanwhile).
        """
        with self._transaction():
            row = self._db.execute(
                "SELECT spec, slots, handoff FROM jobs WHERE name = ? AND state = ?",
                (name, JobState.RUNNABLE.value),
            ).fetchone()
            if row is None:
                raise LookupError(name)
            index = self._db.execute("SELECT count(*) FROM attempts WHERE job = ?", (name,)).fetchone()[0]
            self._db.execute("UPDATE jobs SET state = ? WHERE name = ?", (JobState.STARTING.value, name))
            self._db.execute(
                "INSERT INTO attempts (job, idx, slots, devices, host, log_path) VALUES (?, ?, ?, ?, ?, ?)",
                (name, index, row["slots"], ",".join(map(str, devices)), host, str(log_path(index))),
            )
            self.crash_points.reach("claimed")
        self.crash_points.reach("starting-written")
        return spec_from_json(row["spec"]), index, row["handoff"]

    def unclaim(self, name: str, index: int) -> bool:
        """Attempt `index`, whose runner never ran its command, is forgotten and its job RUNNABLE again.

        False when the job is no longer starting or running, or was asked to stop (it ends as stopped).
        """
        marks = ", ".join("?" * len(ACTIVE))
        with self._transaction():
            moved = self._db.execute(
                "UPDATE jobs SET state = ?, status_reason = NULL"
                f" WHERE name = ? AND state IN ({marks}) AND stop_reason IS NULL",
                (JobState.RUNNABLE.value, name, *(s.value for s in ACTIVE)),
            ).rowcount
            if moved:
                self._db.execute("DELETE FROM attempts WHERE job = ? AND idx = ?", (name, index))
        return bool(moved)

    def attempt_running(self, name: str, index: int, pid: int, pid_started_at: float) -> bool:
        """STARTING → RUNNING once the runner process exists; False when a stop came first."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "UPDATE attempts SET pid = ?, pid_started_at = ?, started_at = ? WHERE job = ? AND idx = ?",
                (pid, pid_started_at, now, name, index),
            )
            self.crash_points.reach("pid-recorded")
            running = self._db.execute(
                "UPDATE jobs SET state = ?, started_at = ?, status_reason = NULL"
                " WHERE name = ? AND state = ?",
                (JobState.RUNNING.value, now, name, JobState.STARTING.value),
            ).rowcount
        self.crash_points.reach("running-written")
        return bool(running)

    def mark_attempt(self, name: str, index: int, reason: str) -> None:
        """Note why an attempt is being ended (e.g. timed out) before its process is gone."""
        self._write("UPDATE attempts SET status_reason = ? WHERE job = ? AND idx = ?", (reason, name, index))

    def end_attempt(
        self,
        name: str,
        index: int,
        *,
        exit_code: int | None,
        attempt_reason: str,
        state: JobState,
        reason: str | None,
    ) -> None:
        """Close an attempt and move its job to `state` (RUNNABLE to retry, SUCCEEDED or FAILED)."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "UPDATE attempts SET stopped_at = ?, exit_code = ?, status_reason = ?"
                " WHERE job = ? AND idx = ?",
                (now, exit_code, attempt_reason, name, index),
            )
            stopped = now if state.is_terminal else None
            self._db.execute(
                "UPDATE jobs SET state = ?, status_reason = ?, stopped_at = ? WHERE name = ?",
                (state.value, reason, stopped, name),
            )
        self.crash_points.reach("settled")
        if state is JobState.RUNNABLE:
            self.crash_points.reach("retry-queued")

    def unarchived(self) -> list[Job]:
        """Finished jobs whose output archive is not written yet."""
        return self._jobs(
            "WHERE state IN (?, ?) AND archived = 0", [JobState.SUCCEEDED.value, JobState.FAILED.value]
        )

    def mark_archived(self, name: str) -> None:
        self._write("UPDATE jobs SET archived = 1 WHERE name = ?", (name,))
