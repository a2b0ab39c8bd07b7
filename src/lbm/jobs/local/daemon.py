"""Finding, starting and stopping the one agent process of a $LBM_HOME (guarded by an flock on agent.lock)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping

from lbm.errors import LbmError
from lbm.jobs.local import wakeup
from lbm.jobs.local.home import LocalHome

# How long an agent may hold its lock before its pid is in it (its starter writes the pid right after).
PID_WAIT_S = 10.0


def acquire_agent_lock(home: LocalHome, *, write_pid: bool = True) -> int | None:
    """Take the agent lock (writing our pid in it); the held file descriptor, or None if an agent has it."""
    home.check()
    home.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(home.agent_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if write_pid:
        _write_pid(fd, os.getpid())
    else:
        os.ftruncate(fd, 0)  # a dead agent's pid must not be mistaken for the one starting
    return fd


def adopt_agent_lock(fd: int) -> int:
    """Take over the agent lock a starter handed down as `fd`, writing our pid in it."""
    os.set_inheritable(fd, False)
    _write_pid(fd, os.getpid())
    return fd


def _write_pid(fd: int, pid: int) -> None:
    """Replace the lock file's content with `pid` (never leaving it empty in between)."""
    data = f"{pid}\n".encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def agent_running(home: LocalHome) -> bool:
    """Whether a process holds the agent lock of `home`."""
    try:
        fd = os.open(home.agent_lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def agent_pid(home: LocalHome) -> int | None:
    """The pid of the running agent of `home`, or None when none runs."""
    if not agent_running(home):
        return None
    try:
        return int(home.agent_lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_agent(home: LocalHome) -> bool:
    """Start `lbm agent --foreground` detached (own session, orphaned to init), logging to agent.log.

    The agent lock is taken here and handed to the new process, so there is never a moment when a second
    agent could start. False when an agent already runs.
    """
    lock = acquire_agent_lock(home, write_pid=False)
    if lock is None:
        return False
    try:
        os.set_inheritable(lock, True)
        env = {**os.environ, "LBM_HOME": str(home.root)}
        argv = [sys.executable, "-m", "lbm.cli.main", "agent", "--foreground", "--lock-fd", str(lock)]
        # `sh` starts the agent in the background, prints its pid and exits: the agent is nobody's child here.
        started = subprocess.run(
            ["/bin/sh", "-c", 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!', "lbm-agent"]
            + [str(home.agent_log), *argv],
            env=env,
            cwd=home.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
            pass_fds=(lock,),
            check=True,
        )
        _write_pid(lock, int(started.stdout))
    finally:
        os.close(lock)
    return True


def ensure_agent(home: LocalHome) -> None:
    """Wake the agent of `home`, starting one if none runs."""
    if not wakeup.send(home.wake_fifo):
        start_agent(home)


def hand_over(home: LocalHome, job: str, handoff: str, secrets: Mapping[str, str]) -> None:
    """Give the agent of `home` the secrets of job `job` (token `handoff`), starting the agent if none runs.

    LbmError when no agent listens (the job must then not be queued: it would run without its secrets).
    """
    until_listening(home, lambda: wakeup.hand_over(home.wake_fifo, job, handoff, secrets))


def until_listening(home: LocalHome, send: Callable[[], bool] | None = None) -> None:
    """Send (by default, a poke) until the agent of `home` reads its FIFO, starting the agent if none runs.

    LbmError when the agent it started exits at once, or an agent holds the lock but does not listen within
    PID_WAIT_S seconds.
    """
    home.check()
    send = send or (lambda: wakeup.send(home.wake_fifo))
    deadline = time.monotonic() + PID_WAIT_S
    started = False
    while not send():
        if not agent_running(home):
            if started:
                raise LbmError(f"the agent of {home.root} exited as it started; see {home.agent_log}")
            started = start_agent(home)  # False: another process started one, which will listen
        elif time.monotonic() >= deadline:
            raise LbmError(f"the agent of {home.root} is not listening; see {home.agent_log}")
        time.sleep(0.01)


def wait_agent_pid(home: LocalHome, wait_s: float = PID_WAIT_S) -> int | None:
    """The pid of the running agent of `home`, or None when none runs.

    An agent that has just started holds the lock a moment before its pid is recorded there: wait for the
    pid while the lock is held, up to `wait_s` seconds (then LbmError).
    """
    deadline = time.monotonic() + wait_s
    while (pid := agent_pid(home)) is None:
        if not agent_running(home):
            return None
        if time.monotonic() >= deadline:
            raise LbmError(
                f"the agent of {home.root} holds its lock but recorded no pid within {wait_s:g} s; "
                f"see {home.agent_log}"
            )
        time.sleep(0.01)
    return pid


def stop_agent(home: LocalHome, wait_s: float = PID_WAIT_S) -> int | None:
    """Ask the running agent to exit (SIGTERM; its attempts keep running); its pid, or None if none runs.

    Reliable right after an agent starts (see `wait_agent_pid`).
    """
    pid = wait_agent_pid(home, wait_s)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile: stopped either way
            os.kill(pid, signal.SIGTERM)
    return pid
