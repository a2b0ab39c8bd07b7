"""`lbm agent`: the local backend's scheduler (started on demand by `lbm launch`; rarely run by hand)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from lbm.cli.entry import ArgumentParser
from lbm.errors import LbmError
from lbm.jobs.local import daemon
from lbm.jobs.local.home import LocalHome, lbm_home

WAIT_S = 15.0


def main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(
        prog="lbm agent",
        description="Start the local backend's scheduler agent in the background (one per $LBM_HOME), "
        "run it in this terminal, or stop it. Running jobs keep running when the agent stops.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--foreground", action="store_true", help="serve in this process until Ctrl-C/SIGTERM")
    mode.add_argument("--stop", action="store_true", help="stop the running agent")
    parser.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    home = LocalHome(lbm_home())
    if args.foreground:
        lock = daemon.adopt_agent_lock(args.lock_fd) if args.lock_fd else daemon.acquire_agent_lock(home)
        if lock is None:
            pid = daemon.wait_agent_pid(home)
            raise LbmError(f"an agent (pid {pid}) already serves {home.root}; stop it with --stop")
        from lbm.jobs.local.agent import run_agent

        return run_agent(home, lock)
    if args.stop:
        pid = daemon.stop_agent(home)
        if pid is None:
            print(f"no agent serves {home.root}")
            return 0
        _wait_for(lambda: not daemon.agent_running(home), f"agent {pid} did not stop")
        print(f"stopped agent {pid} of {home.root}")
        return 0
    daemon.until_listening(home)
    print(f"agent {daemon.wait_agent_pid(home)} serves {home.root} (log: {home.agent_log})")
    return 0


def _wait_for(condition, failure: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise LbmError(failure)
        time.sleep(0.05)
