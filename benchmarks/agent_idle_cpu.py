"""CPU used by an idle local-backend agent (no jobs) over a window, from psutil's cpu_times of its process.

python benchmarks/agent_idle_cpu.py --seconds 30
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

from lbm.jobs.local.daemon import agent_pid, start_agent, stop_agent
from lbm.jobs.local.home import LocalHome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring window (default 30)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbm-bench-") as root:
        home = LocalHome(Path(root) / "home")
        start_agent(home)
        try:
            deadline = time.monotonic() + 30
            while agent_pid(home) is None or "serving" not in home.agent_log.read_text():
                if time.monotonic() > deadline:
                    raise TimeoutError("the agent did not start")
                time.sleep(0.05)
            agent = psutil.Process(agent_pid(home))
            before = agent.cpu_times()
            time.sleep(args.seconds)  # the measuring window itself, not synchronisation
            after = agent.cpu_times()
            wakeups = agent.num_ctx_switches()
        finally:
            stop_agent(home)
    used = (after.user - before.user) + (after.system - before.system)
    print(
        f"idle agent over {args.seconds:.0f} s: {used * 1000:.1f} ms CPU ({100 * used / args.seconds:.3f} %)"
    )
    print(f"context switches since start: {wakeups.voluntary} voluntary, {wakeups.involuntary} involuntary")
    return 0


if __name__ == "__main__":
    sys.exit(main())
