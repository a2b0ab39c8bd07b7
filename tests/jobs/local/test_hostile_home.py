"""Two agents started at once, a store on a full disk, a damaged jobs.sqlite: one clear message each, and
nothing that was committed is lost."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_setup import LocalSetup, process_gone, wait_for

from lbm.errors import LbmError
from lbm.jobs.local import daemon
from lbm.jobs.model import JobState, Queue

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
RECORD_RUN = "import os\nwith open({runs!r}, 'a') as f: f.write(os.environ['LBM_JOB_NAME'] + '\\n')"
QUEUES = [Queue("wide", "cpu", 4), Queue("held", "cpu", 0)]


def open_held_queue(local: LocalSetup) -> None:
    opened = local.region([Queue("wide", "cpu", 4), Queue("held", "cpu", 4)])
    local.backend.store.save_region(opened.name, opened.to_dict())
    daemon.ensure_agent(local.home)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str, log_lines: bool = False) -> None:
    """Exit 2 and one error line holding each fragment, after the process's own log lines if `log_lines`."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and (log_lines or len(lines) == 1), result.stderr
    assert all(f in lines[-1] for f in fragments), result.stderr


def test_two_agents_started_at_once_one_serves_and_the_other_says_so(local: LocalSetup, tmp_path: Path):
    runs = tmp_path / "runs"
    names = [f"ann-{i}" for i in range(3)]
    for name in names:
        local.insert(name, RECORD_RUN.format(runs=str(runs)), queue="wide")
    logs = [tmp_path / f"agent-{i}.log" for i in range(2)]
    agents = [
        subprocess.Popen(
            [BIN / "lbm", "agent", "--foreground"], stdout=subprocess.DEVNULL, stderr=log.open("w")
        )
        for log in logs
    ]
    try:
        loser = wait_for(
            lambda: next((a for a in agents if a.poll() is not None), None), "one agent to give way"
        )
        winner, loser_log = (agents[1], logs[0]) if loser is agents[0] else (agents[0], logs[1])

        assert loser.returncode == 2
        serving = f"an agent (pid {winner.pid}) already serves {local.home.root}; stop it with --stop"
        assert loser_log.read_text().splitlines() == [f"lbm agent: error: {serving}"]
        jobs = [local.wait_ended(name) for name in names]
        assert winner.poll() is None
    finally:
        for agent in agents:
            agent.terminate()
            agent.wait(timeout=60)

    assert [(job.state, len(job.attempts)) for job in jobs] == [(JobState.SUCCEEDED, 1)] * 3
    assert sorted(runs.read_text().split()) == names


@pytest.fixture
def local_on_a_small_disk(isolated_env: Path) -> Iterator[LocalSetup]:
    """Queues `wide` and `held` (0 slots), with $LBM_HOME on its own 4 MiB tmpfs (skipped where mounting is
    not permitted); the bucket is elsewhere."""
    setup = LocalSetup(isolated_env, QUEUES)
    setup.home.root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(setup.home.root)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield setup
    finally:
        setup.clean_up()
        subprocess.run(["umount", "-l", str(setup.home.root)], check=True)


def fill(path: Path) -> None:
    """Write zeros to `path` until its disk is full."""
    with path.open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC, error


def test_a_full_disk_refuses_a_job_clearly_and_keeps_those_committed(
    local_on_a_small_disk: LocalSetup, tmp_path: Path
):
    local, runs = local_on_a_small_disk, tmp_path / "runs"
    code = RECORD_RUN.format(runs=str(runs))
    local.submit("ann-ran", code, queue="wide")
    assert local.wait_ended("ann-ran").state == JobState.SUCCEEDED
    committed = ["ann-waits"]
    local.submit("ann-waits", code, queue="held")
    fill(local.home.root / "filler")

    refused = None
    for index in range(1000):  # the store's write-ahead log may still have room for a few
        try:
            local.submit(f"ann-{index}", code, queue="held")
        except LbmError as error:
            refused = (f"ann-{index}", str(error))
            break
        committed.append(f"ann-{index}")

    assert refused is not None, "a full disk took 1000 jobs"
    assert f"the job store {local.home.db} cannot grow: its disk is full" in refused[1]
    assert "\n" not in refused[1]
    listed = sorted(job.name for job in local.backend.list())
    assert listed == sorted(["ann-ran", *committed])

    (local.home.root / "filler").unlink()
    open_held_queue(local)

    assert [local.wait_ended(name).state for name in committed] == [JobState.SUCCEEDED] * len(committed)
    assert sorted(runs.read_text().split()) == sorted(["ann-ran", *committed])
    assert refused[0] not in [job.name for job in local.backend.list()]


def damage(db: Path, where: str) -> tuple[bytes, bytes]:
    """Overwrite 64 bytes of the store file: its header, or the first page of the jobs table; the bytes
    before and after."""
    with sqlite3.connect(db) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root_page = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
    connection.close()
    original = db.read_bytes()
    offset = 0 if where == "header" else (root_page - 1) * page_size
    damaged = original[:offset] + b"\xa5" * 64 + original[offset + 64 :]
    db.write_bytes(damaged)
    return original, damaged


@pytest.mark.parametrize("where", ["header", "jobs table"])
def test_a_damaged_store_is_reported_and_left_as_it_is(local: LocalSetup, tmp_path: Path, where: str):
    runs = tmp_path / "runs"
    code = RECORD_RUN.format(runs=str(runs))
    local.submit("ann-ran", code, queue="wide")
    local.wait_ended("ann-ran")
    local.submit("ann-waits", code, queue="held")
    agent = local.agent_pid()
    os.kill(agent, signal.SIGTERM)
    wait_for(lambda: process_gone(agent), "the agent to exit")
    local.backend.close()
    original, damaged = damage(local.home.db, where)

    for argv in (["sagey", "ls"], ["sagey", "describe", "ann-waits"], ["lbm", "agent", "--foreground"]):
        result = subprocess.run([BIN / argv[0], *argv[1:]], capture_output=True, text=True, timeout=60)
        damaged_store = f"the job store {local.home.db} is damaged; lbm leaves it as it is"
        one_line_error(result, damaged_store, log_lines=argv[0] == "lbm")
    started = subprocess.run([BIN / "lbm", "agent"], capture_output=True, text=True, timeout=60)
    one_line_error(
        started, f"the agent of {local.home.root} exited as it started; see {local.home.agent_log}"
    )
    assert "is damaged; lbm leaves it as it is" in local.home.agent_log.read_text().splitlines()[-1]
    with pytest.raises(LbmError, match="is damaged"):
        local.submit("ann-new", code, queue="wide")

    local.backend.close()
    assert local.home.db.read_bytes() == damaged
    local.home.db.write_bytes(original)  # as restoring a backup would
    open_held_queue(local)
    assert local.wait_ended("ann-waits").state == JobState.SUCCEEDED
    assert sorted(job.name for job in local.backend.list()) == ["ann-ran", "ann-waits"]
    assert sorted(runs.read_text().split()) == ["ann-ran", "ann-waits"]
