"""slurmctld RPCs per minute while 20 jobs run and a watcher polls them, as `lbm watch` does.

20 `sleep` jobs run on a 24-CPU test node without GPUs (submitted through the Slurm backend); then, for
`--seconds` (60), the backend lists the region's jobs every `poll_interval_s` of the registry (what
`lbm watch` and a `sagey ls` loop do). slurmctld's own counters (`sdiag`, reset at the start) give the RPCs
it served, by type. One listing is one `squeue` call for all jobs, so the count does not grow with them.

    python benchmarks/slurm_controller_polls.py --seconds 60
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time

from lbm.jobs.model import JobSpec, JobState
from lbm.jobs.registry import backend_info
from lbm.jobs.slurm import commands
from slurm_cluster import bench_cluster

JOBS = 20


def rpc_counts() -> dict[str, int]:
    """RPCs served by message type, from sdiag (user-issued RPCs; slurmd's own are counted apart)."""
    text = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    section = text.split("Remote Procedure Call statistics by message type", 1)[1]
    section = section.split("Remote Procedure Call statistics by user", 1)[0]
    return {
        m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(\S+)\s+\(\s*\d+\) count:(\d+)", section, re.M)
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60)
    args = p.parse_args()
    with bench_cluster(node_cpus=24, gpu_files=()) as (_, root):
        from lbm.jobs.registry import backend_for
        from lbm.site import load_site

        backend = backend_for(load_site().region())
        for i in range(JOBS):
            name = f"ann-lbm-poll-{i:02d}"
            backend.submit(
                JobSpec(name, "ann", "debug", ("sleep", "600"), f"file://{root}/b/{name}/", "ann"), {}
            )
        while sum(j.state is JobState.RUNNING for j in backend.list()) < JOBS:
            time.sleep(0.5)
        interval = backend_info("slurm").poll_interval_s
        subprocess.run(["sdiag", "--reset"], check=True, capture_output=True)
        before = rpc_counts()
        polls, end = 0, time.monotonic() + args.seconds
        while time.monotonic() < end:
            running = sum(j.state is JobState.RUNNING for j in backend.list())
            assert running == JOBS
            polls += 1
            time.sleep(interval)
        after = rpc_counts()
        for job in backend.list():
            commands.scancel(job.engine_id)
    served = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    served = {k: v for k, v in served.items() if v > 0}
    minutes = args.seconds / 60
    total = sum(served.values())
    print(f"{JOBS} jobs running; {polls} listings in {args.seconds:.0f} s (every {interval:g} s)")
    print(f"slurmctld RPCs: {total / minutes:.1f} per minute ({total / polls:.2f} per listing)")
    for kind, count in sorted(served.items(), key=lambda kv: -kv[1]):
        print(f"  {kind}: {count / minutes:.1f} per minute")


if __name__ == "__main__":
    main()
