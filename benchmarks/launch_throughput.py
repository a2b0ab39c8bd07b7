"""Time of many launches through `lbm launch`'s own entry point, beside bare submissions, interleaved.

Each round runs, in this one process: (a) `lbm launch --config-file <tiny> --num-epochs 1 --no-wait` through
`lbm.cli.launch.main` (parse the flags, load the site, plan: pick the queue and compose the config with
Hydra, check it against the config schema; check the bucket, name the job, submit it, print it); (b) the
composition alone (`compose_config` of the same config and overrides: Hydra plus the schema check); (c) the
schema check alone (`check_config` of the composed values); (d) one bare `LocalBackend.submit` of a ready
JobSpec, as `submit_throughput.py` does. The queue has no capacity, so every job waits RUNNABLE and nothing
trains; the agent runs. Medians and totals per variant, and the launch's median over the bare submission's.

    python benchmarks/launch_throughput.py --launches 1000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from bench_home import use_temporary_home
from lbm.cli import launch
from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.local.daemon import agent_running, stop_agent
from lbm.jobs.model import JobSpec, JobState, StatusReason
from lbm.site import load_site
from lbm.train.compose import compose_config
from lbm.train.config.schema import check_config

CONFIG = "train_diffusion_unet_keypoints_lang_tiny"
QUEUE = "bench-waiting"
SITE_YAML = """\
regions:
  local:
    backend: local
    bucket: file://{root}/bucket
    prefix: outputs
    queues:
      - {{name: {queue}, instanceType: cpu, capacity: 0}}
"""
FLAGS = ["--config-file", CONFIG, "--num-epochs", "1", "--queue", QUEUE, "--no-wait"]


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def launched(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = launch.main(argv)
    if code != 0:
        raise RuntimeError(f"lbm launch {' '.join(argv)} exited {code}")


def bare_spec(root: Path, index: int) -> JobSpec:
    name = f"bare-{index:05d}"
    return JobSpec(
        name=name,
        owner="bench",
        queue=QUEUE,
        command=("true",),
        artifact_uri=f"file://{root}/bucket/outputs/bench-lbm/{name}/",
        share_identifier="bench",
    )


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_s": round(statistics.median(ordered), 6),
        "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 6),
        "total_s": round(sum(ordered), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=1000, help="rounds (default 1000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbm-launch-throughput-") as tmp:
        root = Path(tmp)
        use_temporary_home(root, SITE_YAML.format(root=root, queue=QUEUE))
        backend = LocalBackend(load_site().region(), root / "home")
        times: dict[str, list[float]] = {
            "lbm launch": [],
            "compose only": [],
            "schema check": [],
            "bare submit": [],
        }
        launched(FLAGS)  # warm-up: imports, and the agent starts
        composed = OmegaConf.to_container(compose_config(CONFIG, ["training.num_epochs=1"]), resolve=True)
        try:
            for index in range(args.launches):
                times["lbm launch"].append(timed(lambda: launched(FLAGS)))
                times["compose only"].append(timed(lambda: compose_config(CONFIG, ["training.num_epochs=1"])))
                times["schema check"].append(timed(lambda: check_config(composed)))
                spec = bare_spec(root, index)
                times["bare submit"].append(timed(lambda s=spec: backend.submit(s, secrets={})))
            waiting = backend.list(queue=QUEUE, states=[JobState.RUNNABLE, JobState.SUBMITTED])
        finally:
            for job in backend.list(states=[s for s in JobState if not s.is_terminal]):
                backend.stop(job.name, reason=StatusReason.CANCELLED_IN_QUEUE)
            stop_agent(backend.home)
            while agent_running(backend.home):
                time.sleep(0.05)
            backend.close()
    results = {label: summary(values) for label, values in times.items()}
    for label, figures in results.items():
        print(
            f"{label:<13} median {figures['median_s'] * 1000:8.3f} ms  p90 {figures['p90_s'] * 1000:8.3f} ms"
            f"  total over {args.launches}: {figures['total_s']:8.2f} s"
        )
    ratio = results["lbm launch"]["median_s"] / results["bare submit"]["median_s"]
    share = results["compose only"]["median_s"] / results["lbm launch"]["median_s"]
    print(f"launch / bare submit (medians): {ratio:.0f}x; composing is {share:.0%} of a launch")
    print(f"jobs waiting in {QUEUE} afterwards: {len(waiting)} (expected {2 * args.launches + 1})")
    print(json.dumps({"launches": args.launches, "cpus": os.cpu_count(), "results": results}))
    return 0 if len(waiting) == 2 * args.launches + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
