"""Time to queue many jobs through the local backend's Python API while its agent schedules them.

The jobs (`true`) go to a one-slot queue, so the agent keeps starting and settling jobs during the run.

    python benchmarks/submit_throughput.py --jobs 1000
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.local.daemon import agent_pid, stop_agent
from lbm.jobs.local.processes import signal_attempt
from lbm.jobs.model import JobSpec, Queue
from lbm.jobs.region import Region


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="submissions (default 1000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbm-bench-") as root:
        region = Region("local", "local", f"file://{root}/bucket", "outputs", [Queue("bench", "cpu", 1)])
        backend = LocalBackend(region, Path(root) / "home")
        try:
            started = time.perf_counter()
            for i in range(args.jobs):
                name = f"bench-{i:05d}"
                backend.submit(
                    JobSpec(
                        name=name,
                        owner=f"user{i % 7}",
                        queue="bench",
                        command=("true",),
                        artifact_uri=f"file://{root}/bucket/outputs/bench-lbm/{name}/",
                        share_identifier=f"user{i % 7}",
                    ),
                    {},
                )
            elapsed = time.perf_counter() - started
            stored = len(backend.list())
        finally:
            pid = agent_pid(backend.home)
            if pid is not None:
                stop_agent(backend.home)
                while agent_pid(backend.home) is not None:
                    time.sleep(0.01)
            for attempt in backend.store.active_attempts():
                signal_attempt(attempt.pid, attempt.pid_started_at, signal.SIGKILL)
            backend.close()
    rate = args.jobs / elapsed
    print(f"{args.jobs} submissions through the Python API: {elapsed:.2f} s ({rate:.0f} per second)")
    print(f"jobs in the store afterwards: {stored}")
    return 0 if stored == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
