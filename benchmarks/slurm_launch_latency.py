"""`lbm launch` to RUNNING on the Slurm test cluster, whole process, beside Slurm's own `sbatch` to RUNNING.

Each round runs, one after the other, `lbm launch --config-file <tiny>` (which returns once its job runs)
and `sbatch --wrap 'sleep 600'` followed by `squeue --json` every 20 ms until that job runs; both jobs are
then cancelled and the node is free again. One warm-up launch (which also makes the dataset) is not counted.

    python benchmarks/slurm_launch_latency.py --runs 10
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lbm.jobs.slurm import commands
from slurm_cluster import bench_cluster

BIN = Path(sys.executable).parent
TINY = "train_diffusion_unet_keypoints_lang_tiny"
OVERRIDES = "task.synthesize.episodes_per_task=4,dataloader.num_workers=0,training.max_train_steps=100000"


def lbm_launch() -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "lbm"), "launch", "--config-file", TINY, "--config-overrides", OVERRIDES],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    name = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("job:"))
    return elapsed, name


def sbatch_to_running(tmp: Path) -> tuple[float, str]:
    start = time.perf_counter()
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--partition=debug", f"--output={tmp}/%j.log", "--wrap", "sleep 600"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    while not any(j.job_id == job_id and j.state == "RUNNING" for j in commands.squeue_jobs()):
        time.sleep(0.02)
    return time.perf_counter() - start, job_id


def wait_idle() -> None:
    while any(j.state in ("RUNNING", "PENDING", "COMPLETING", "CONFIGURING") for j in commands.squeue_jobs()):
        time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    with bench_cluster() as (_, root):
        from lbm.jobs.registry import backend_for
        from lbm.site import load_site

        backend = backend_for(load_site().region())
        _, name = lbm_launch()  # warm-up: makes the dataset
        backend.stop(name, reason="benchmark")
        wait_idle()
        launches, sbatches = [], []
        for _ in range(args.runs):
            elapsed, name = lbm_launch()
            launches.append(elapsed)
            backend.stop(name, reason="benchmark")
            wait_idle()
            elapsed, job_id = sbatch_to_running(root)
            sbatches.append(elapsed)
            commands.scancel(job_id)
            wait_idle()
    for label, times in (("lbm launch to RUNNING", launches), ("sbatch to RUNNING", sbatches)):
        q = statistics.quantiles(times, n=10)
        print(f"{label}: median {statistics.median(times):.3f} s, p90 {q[-1]:.3f} s, min {min(times):.3f} s")
    print(f"ratio of medians: {statistics.median(launches) / statistics.median(sbatches):.1f}x")


if __name__ == "__main__":
    main()
