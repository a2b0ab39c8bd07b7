"""The SQLite job store: listing by state with a limit, served by an index, in stores old and new."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from lbm.jobs.local.home import LocalHome
from lbm.jobs.local.store import JobStore
from lbm.jobs.model import JobSpec, JobState, StatusReason

TERMINAL = (JobState.SUCCEEDED, JobState.FAILED)


def spec(name: str, queue: str = "q") -> JobSpec:
    return JobSpec(
        name=name,
        owner="ann",
        queue=queue,
        command=("true",),
        artifact_uri=f"file:///bucket/{name}/",
        share_identifier="ann",
    )


def fill(store: JobStore, home: LocalHome, count: int) -> dict[str, JobState]:
    """`count` jobs: every third waits, the others end SUCCEEDED or FAILED in turn; name → state."""
    states = {}
    for index in range(count):
        name = f"job-{index:04d}"
        store.insert(spec(name, queue=("q", "r")[index % 2]), 1, None)
        states[name] = JobState.SUBMITTED
    store.promote_submitted()
    for index, name in enumerate(states):
        if index % 3 == 0:
            states[name] = JobState.RUNNABLE
            continue
        _, attempt, _ = store.begin_attempt(name, lambda i, n=name: home.attempt_log(n, i), [], "host")
        store.attempt_running(name, attempt, 1, 0.0)
        state = TERMINAL[index % 2]
        store.end_attempt(
            name, attempt, exit_code=0, attempt_reason=StatusReason.exit_code(0), state=state, reason=None
        )
        states[name] = state
    return states


@pytest.fixture
def home(tmp_path: Path) -> LocalHome:
    return LocalHome(tmp_path / "home")


def plans(store: JobStore, call) -> list[str]:
    """The query plans of the SELECTs on `jobs` that `call()` runs against the store's connection."""
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        call()
    finally:
        store._db.set_trace_callback(None)
    found = []
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT") and " FROM jobs " in sql:
            rows = store._db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            found.append(" / ".join(row[3] for row in rows))
    return found


def test_newest_jobs_in_some_states_with_a_limit(home: LocalHome):
    store = JobStore(home.db)
    states = fill(store, home, 60)

    newest_ended = [job.name for job in store.jobs(states=TERMINAL, limit=7)]
    newest_in_q = [job.name for job in store.jobs(queue="q", states=TERMINAL, limit=3)]

    ended = [name for name in reversed(states) if states[name] in TERMINAL]
    assert newest_ended == ended[:7]
    assert newest_in_q == [name for name in ended if int(name[-4:]) % 2 == 0][:3]
    assert [job.name for job in store.jobs(states=[JobState.RUNNABLE], limit=2)] == ["job-0057", "job-0054"]
    store.close()


def test_a_state_filter_with_a_limit_reads_an_index_not_every_row(home: LocalHome):
    store = JobStore(home.db)
    fill(store, home, 30)

    found = plans(store, lambda: store.jobs(states=TERMINAL, limit=5))

    assert found and all("USING INDEX jobs_by_state_seq" in plan for plan in found), found
    store.close()


def test_a_store_made_by_an_older_lbm_gets_the_index_outbox_and_transitions_when_opened(home: LocalHome):
    JobStore(home.db).close()
    with sqlite3.connect(home.db) as db:
        for trigger in ("transitions_on_state", "transitions_on_insert", "outbox_on_state"):
            db.execute(f"DROP TRIGGER {trigger}")
        db.execute("DROP TABLE transitions")
        db.execute("DROP TABLE outbox")
        db.execute("DROP INDEX jobs_by_state_seq")

    store = JobStore(home.db)

    names = {row[0] for row in store._db.execute("SELECT name FROM sqlite_master")}
    assert {"jobs_by_state_seq", "outbox", "outbox_on_state", "transitions", "transitions_on_state"} <= names
    store.close()


def test_active_shares_are_queued_running_or_ended_within_the_decay_window(home: LocalHome):
    # AWS Batch User Guide, fair-share scheduling: "If a share identifier has jobs in a SUBMITTED, PENDING,
    # RUNNABLE, STARTING, or RUNNING state, it's considered an active share identifier. After the period of
    # time for decay expires, a share identifier is considered inactive."
    store = JobStore(home.db)
    for name, queue in [("old-0", "q"), ("ann-0", "q"), ("bob-0", "q"), ("carl-0", "q")]:
        share = name.split("-")[0]
        store.insert(dataclasses.replace(spec(name, queue), owner=share, share_identifier=share), 1, None)
    store.insert(dataclasses.replace(spec("eve-0", "r"), owner="eve", share_identifier="eve"), 1, None)
    store.promote_submitted()
    for name, state in [("old-0", JobState.SUCCEEDED), ("ann-0", JobState.FAILED), ("carl-0", None)]:
        _, attempt, _ = store.begin_attempt(name, lambda i, n=name: home.attempt_log(n, i), [], "host")
        store.attempt_running(name, attempt, 1, 0.0)
        if state is not None:
            store.end_attempt(name, attempt, exit_code=0, attempt_reason="done", state=state, reason=None)
    window_start = store.job("old-0").stopped_at
    assert store.job("ann-0").stopped_at > window_start
    store.insert(dataclasses.replace(spec("dan-1"), owner="dan", share_identifier="dan"), 1, None)

    # old ended before the window; ann ended within it; bob waits; carl runs; dan has a job just submitted
    assert store.active_shares("q", window_start) == {"ann", "bob", "carl", "dan"}
    assert store.active_shares("r", window_start) == {"eve"}
