"""Stopping the agent of a home, including one that has just started and not yet recorded its pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lbm.errors import LbmError
from lbm.jobs.local.daemon import acquire_agent_lock, agent_running, stop_agent
from lbm.jobs.local.home import LocalHome


@pytest.fixture
def home(isolated_env: Path) -> LocalHome:
    return LocalHome(isolated_env / "home")


def test_stop_agent_waits_for_the_pid_of_an_agent_still_starting(home: LocalHome):
    # As `start_agent` does: take the lock with no pid in it and hand it to a new agent process, which
    # records its own pid once Python has started.
    lock = acquire_agent_lock(home, write_pid=False)
    agent = subprocess.Popen(
        [sys.executable, "-m", "lbm.cli.main", "agent", "--foreground", "--lock-fd", str(lock)],
        env={**os.environ, "LBM_HOME": str(home.root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(lock,),
    )
    os.close(lock)
    try:
        assert agent_running(home)

        stopped = stop_agent(home)

        assert stopped == agent.pid
        assert agent.wait(timeout=60) in (0, -signal.SIGTERM)
        assert not agent_running(home)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_stop_agent_signals_the_pid_written_while_it_waits(home: LocalHome):
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    lock = acquire_agent_lock(home, write_pid=False)
    result: list[int | None] = []
    stopper = threading.Thread(target=lambda: result.append(stop_agent(home, wait_s=60)))
    try:
        stopper.start()
        stopper.join(timeout=0.3)
        assert stopper.is_alive(), "stop_agent returned while the lock was held without a pid"

        os.pwrite(lock, f"{stand_in.pid}\n".encode(), 0)
        stopper.join(timeout=60)

        assert result == [stand_in.pid]
        assert stand_in.wait(timeout=30) == -signal.SIGTERM
    finally:
        os.close(lock)
        stopper.join(timeout=60)
        if stand_in.poll() is None:
            stand_in.kill()
            stand_in.wait()


def test_stop_agent_gives_up_on_a_lock_that_never_gets_a_pid(home: LocalHome):
    lock = acquire_agent_lock(home, write_pid=False)
    try:
        with pytest.raises(LbmError, match="holds its lock but recorded no pid within 0.2 s"):
            stop_agent(home, wait_s=0.2)
    finally:
        os.close(lock)


def test_stop_agent_without_an_agent_is_none(home: LocalHome):
    assert stop_agent(home) is None
    lock = acquire_agent_lock(home)  # an agent that ran and exited leaves its pid behind
    os.close(lock)
    assert stop_agent(home) is None
