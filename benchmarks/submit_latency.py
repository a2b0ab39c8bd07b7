"""Submit → RUNNING latency of the local backend through the Python API (median over many jobs).

Each job is submitted to an idle one-slot queue and timed from just before `submit` to the moment the agent
recorded it RUNNING (its runner process exists). The first job also starts the agent and is reported apart.

    python benchmarks/submit_latency.py --runs 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.local.daemon import agent_pid, stop_agent
from lbm.jobs.model import JobSpec, JobState, Queue
from lbm.jobs.region import Region


def wait_until(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("the job did not reach the expected state")
        time.sleep(0.001)
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="jobs to time after the first (default 50)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbm-bench-") as root:
        region = Region("local", "local", f"file://{root}/bucket", "outputs", [Queue("bench", "cpu", 1)])
        backend = LocalBackend(region, Path(root) / "home")
        latencies = []
        try:
            for i in range(args.runs + 1):
                name = f"bench-{i}"
                spec = JobSpec(
                    name=name,
                    owner="bench",
                    queue="bench",
                    command=(sys.executable, "-c", "pass"),
                    artifact_uri=f"file://{root}/bucket/outputs/bench-lbm/{name}/",
                    share_identifier="bench",
                )
                submitted_at = time.time()
                backend.submit(spec, {})
                job = wait_until(lambda n=name: (j := backend.store.job(n)).started_at and j)
                latencies.append(job.started_at - submitted_at)
                wait_until(lambda n=name: backend.store.job(n).state in (JobState.SUCCEEDED, JobState.FAILED))
        finally:
            if agent_pid(backend.home) is not None:
                stop_agent(backend.home)
                wait_until(lambda: agent_pid(backend.home) is None)
            backend.close()
    cold, warm = latencies[0], sorted(latencies[1:])
    print(f"submit -> RUNNING through the Python API, {len(warm)} jobs on an idle agent:")
    p90 = warm[int(0.9 * (len(warm) - 1))]
    print(f"  median {statistics.median(warm) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms,")
    print(f"  max {warm[-1] * 1000:.1f} ms; first job (also starts the agent) {cold * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
