"""`sagey ls` (and `--all`), whole process, with `--jobs` (1,000) finished jobs that only `sacct` still knows.

The jobs (`true`, submitted through the Slurm backend) run on a 16-CPU test node without GPUs; slurmctld
forgets an ended job after 2 s (MinJobAge), so once they are done every listing reads them from the accounting
database: one `squeue --json` and one `sacct` call per listing of the backend (sagey ls lists twice: the
live jobs, then the newest that ended). Each command runs `--runs` times after a warm-up; median, p90, min.

    python benchmarks/slurm_list_latency.py --jobs 1000 --runs 10
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lbm.jobs.model import JobSpec
from lbm.jobs.slurm import commands
from slurm_cluster import bench_cluster

BIN = Path(sys.executable).parent
OWNERS = ("alice", "bob", "carol", "dave")


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    with bench_cluster(node_cpus=16, gpu_files=(), min_job_age_s=2) as (_, root):
        from lbm.jobs.registry import backend_for
        from lbm.site import load_site

        backend = backend_for(load_site().region())
        start = time.perf_counter()
        for i in range(args.jobs):
            owner = OWNERS[i % len(OWNERS)]
            name = f"{owner}-lbm-bench-{i:05d}"
            artifact = f"file://{root}/bucket/outputs/{owner}-lbm/{name}/"
            backend.submit(JobSpec(name, owner, "debug", ("true",), artifact, owner), {})
        submitted = time.perf_counter() - start
        while commands.squeue_jobs():
            time.sleep(1)
        while len(commands.sacct_jobs()) < args.jobs:
            time.sleep(1)
        results = {}
        for label, argv in (("sagey ls", ["sagey", "ls"]), ("sagey ls --all", ["sagey", "ls", "--all"])):
            timed([str(BIN / argv[0]), *argv[1:]])
            times = []
            for _ in range(args.runs):
                elapsed, out = timed([str(BIN / argv[0]), *argv[1:]])
                times.append(elapsed)
            if label.endswith("--all"):
                assert out.count("-lbm-bench-") == args.jobs, "sagey ls --all did not list every job"
            results[label] = times
        python = [timed([sys.executable, "-c", "pass"])[0] for _ in range(args.runs)]
    print(f"{args.jobs} jobs submitted through the backend in {submitted:.1f} s")
    for label, times in results.items():
        q = statistics.quantiles(times, n=10)
        print(f"{label}: median {statistics.median(times):.3f} s, p90 {q[-1]:.3f} s, min {min(times):.3f} s")
    print(f"python -c pass: median {statistics.median(python):.3f} s")


if __name__ == "__main__":
    main()
