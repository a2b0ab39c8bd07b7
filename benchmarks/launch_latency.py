"""Start-to-exit time of a whole `lbm launch` process that returns once its job is RUNNING (the default).

Each launch submits the tiny config (`--config-overrides training.num_epochs=1`) to an idle one-slot CPU queue
in a fresh $LBM_HOME and is timed from process start to exit (Python start, config composition, bucket
check, submit, agent start-up of the job, watching it to RUNNING). The job is then stopped through the Python
API and the next launch waits until it has ended. The first launch also starts the agent and is reported
apart. Next to it: a bare `python -c pass`, and which of `lbm launch --help`, `sagey ls` and `batchy ls QUEUE`
import torch (none should) with their import time (`python -X importtime`).

    python benchmarks/launch_latency.py              # 15 launches
    python benchmarks/launch_latency.py --runs 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_home import use_temporary_home
from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.local.daemon import agent_running, stop_agent
from lbm.jobs.model import JobState, StatusReason
from lbm.site import load_site

BIN = Path(sys.executable).parent
CONFIG = "train_diffusion_unet_keypoints_lang_tiny"
QUEUE = "bench-cpu"
SITE_YAML = """\
regions:
  local:
    backend: local
    bucket: file://{root}/bucket
    prefix: outputs
    queues:
      - {{name: {queue}, instanceType: cpu, capacity: 1}}
"""
# Entry points of the commands that must not import torch, as `python -c` code.
LIGHT_COMMANDS = {
    "lbm launch --help": "from lbm.cli.main import main; main(['launch', '--help'])",
    "sagey ls": "from lbm.cli.sagey import main; main(['ls'])",
    "batchy ls QUEUE": f"from lbm.cli.batchy import main; main(['ls', {QUEUE!r}])",
}


def wait_until(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def launch_once(env: dict[str, str]) -> tuple[float, str]:
    """Seconds the `lbm launch` process took, and the name of the job it launched."""
    argv = [
        str(BIN / "lbm"),
        "launch",
        "--config-file",
        CONFIG,
        "--config-overrides",
        "training.num_epochs=1",
    ]
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"lbm launch exited {result.returncode}:\n{result.stdout}{result.stderr}")
    name = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("job:"))
    return elapsed, name


def import_check(env: dict[str, str]) -> dict[str, dict]:
    """Per light command: whether it imported torch, and its wall time as a process (with -X importtime)."""
    report = {}
    for label, code in LIGHT_COMMANDS.items():
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - started
        modules = {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        report[label] = {
            "imports_torch": "torch" in modules,
            "exit_code": result.returncode,
            "wall_s": elapsed,
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed launches after the first (default 15)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbm-launch-latency-") as tmp:
        root = Path(tmp)
        os.environ["LBM_STOP_GRACE_S"] = "2"
        env = use_temporary_home(root, SITE_YAML.format(root=root, queue=QUEUE))
        backend = LocalBackend(load_site().region(), root / "home")
        bare = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - started)
        times = []
        try:
            for _ in range(args.runs + 1):
                elapsed, name = launch_once(env)
                times.append(elapsed)
                if backend.describe(name).state is not JobState.RUNNING:
                    raise RuntimeError(f"lbm launch returned but job {name} is not RUNNING")
                backend.stop(name, reason=StatusReason.STOPPED_BY_USER)
                wait_until(lambda n=name: backend.describe(n).state.is_terminal, f"job {name} to end")
            imports = import_check(env)
        finally:
            for job in backend.list(states=[s for s in JobState if not s.is_terminal]):
                backend.stop(job.name, reason=StatusReason.STOPPED_BY_USER)
            stop_agent(backend.home)
            wait_until(lambda: not agent_running(backend.home), "the agent to exit")
            backend.close()
    first, warm = times[0], sorted(times[1:])
    p90 = warm[int(0.9 * (len(warm) - 1))]
    print(f"`lbm launch` (returns at RUNNING), {len(warm)} launches with the agent already running:")
    median = statistics.median(warm)
    print(f"  median {median:.3f} s, p90 {p90:.3f} s, min {warm[0]:.3f} s, max {warm[-1]:.3f} s")
    print(f"  first launch (also starts the agent): {first:.3f} s")
    print(f"  bare `python -c pass`: median {statistics.median(bare):.3f} s")
    for label, found in imports.items():
        torch = "IMPORTS TORCH" if found["imports_torch"] else "no torch"
        print(f"  {label}: {torch}, {found['wall_s']:.3f} s with -X importtime (exit {found['exit_code']})")
    summary = {
        "runs": len(warm),
        "median_s": round(statistics.median(warm), 4),
        "p90_s": round(p90, 4),
        "first_s": round(first, 4),
        "python_pass_s": round(statistics.median(bare), 4),
        "cpus": os.cpu_count(),
        "imports": imports,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
