"""`lbm agent`: start in the background, refuse a second one, run in the foreground, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lbm.jobs.local.daemon import agent_pid, agent_running, wait_agent_pid
from lbm.jobs.local.home import LocalHome

LBM = str(Path(sys.executable).with_name("lbm"))


@pytest.fixture
def home(tmp_path: Path) -> LocalHome:
    home = LocalHome(tmp_path / "home")
    yield home
    pid = wait_agent_pid(home)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)


def lbm_agent(home: LocalHome, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LBM_HOME": str(home.root)}
    return subprocess.run([LBM, "agent", *args], env=env, capture_output=True, text=True, timeout=60)


def test_start_status_refuse_and_stop(home: LocalHome):
    started = lbm_agent(home)
    pid = agent_pid(home)
    again = lbm_agent(home)
    second = lbm_agent(home, "--foreground")
    stopped = lbm_agent(home, "--stop")
    stopped_again = lbm_agent(home, "--stop")

    assert started.returncode == 0 and started.stdout.startswith(f"agent {pid} serves {home.root}")
    assert again.stdout == started.stdout
    assert second.returncode == 2
    assert (
        second.stderr
        == f"lbm agent: error: an agent (pid {pid}) already serves {home.root}; stop it with --stop\n"
    )
    assert stopped.stdout == f"stopped agent {pid} of {home.root}\n"
    assert not agent_running(home)
    assert stopped_again.stdout == f"no agent serves {home.root}\n"


def test_foreground_agent_exits_cleanly_on_sigterm(home: LocalHome):
    env = {**os.environ, "LBM_HOME": str(home.root)}
    process = subprocess.Popen([LBM, "agent", "--foreground"], env=env, stderr=subprocess.PIPE, text=True)
    assert f"agent {process.pid} serving {home.root}" in process.stderr.readline()
    assert agent_pid(home) == process.pid

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=30) == 0
    assert f"agent {process.pid} stopping" in process.stderr.read()
    assert not agent_running(home)
