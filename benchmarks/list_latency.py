"""Start-to-exit time of `sagey ls` (also `--all`) and `batchy ls QUEUE` as processes, 10,000 jobs stored.

The store holds (by default) 9,950 finished jobs written through the local backend's job store (SUCCEEDED with
an attempt, or cancelled in queue), plus 50 live jobs submitted through the backend API: one running and 49
waiting behind it in a one-slot queue. `sagey ls` prints the live jobs and the newest 20 that ended,
`sagey ls --all` every job (10,000 rows, into a pipe; the script checks the count), `batchy ls` the 50 live
ones. Each command runs `--runs` times after one warm-up run; the median, 90th percentile and minimum wall
times are reported, next to a bare `python -c pass` for scale.

    python benchmarks/list_latency.py                 # 10,000 jobs, 20 runs each
    python benchmarks/list_latency.py --jobs 1000 --runs 10
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
from lbm.jobs.local.daemon import agent_pid, agent_running, stop_agent
from lbm.jobs.local.home import LocalHome
from lbm.jobs.local.store import JobStore
from lbm.jobs.model import JobSpec, JobState, StatusReason
from lbm.site import load_site

BIN = Path(sys.executable).parent
LIVE_JOBS = 50
OWNERS = ("alice", "bob", "carol", "dave", "main")
SITE_YAML = """\
regions:
  local:
    backend: local
    bucket: file://{root}/bucket
    prefix: outputs
    queues:
      - {{name: bench-a, instanceType: cpu, capacity: 4}}
      - {{name: bench-b, instanceType: cpu-b, capacity: 4}}
      - {{name: bench-held, instanceType: held, capacity: 1}}
"""


def spec(root: Path, name: str, owner: str, queue: str, command: tuple[str, ...]) -> JobSpec:
    return JobSpec(
        name=name,
        owner=owner,
        queue=queue,
        command=command,
        artifact_uri=f"file://{root}/bucket/outputs/{owner}-lbm/{name}/",
        share_identifier=owner,
        resolved_config="training:\n  num_epochs: 100\n" * 20,
    )


def fill_history(root: Path, home: LocalHome, count: int) -> None:
    """`count` finished jobs, written straight into the store (no agent runs yet)."""
    store = JobStore(home.db)
    names = []
    for index in range(count):
        name = f"{OWNERS[index % len(OWNERS)]}-lbm-training-{index:06d}"
        queue = ("bench-a", "bench-b")[index % 2]
        store.insert(spec(root, name, OWNERS[index % len(OWNERS)], queue, ("lbm", "train")), 1, None)
        names.append(name)
    store.promote_submitted()
    for index, name in enumerate(names):
        if index % 4 == 3:
            store.cancel_queued(name, StatusReason.CANCELLED_IN_QUEUE)
        else:
            _, attempt, _ = store.begin_attempt(name, lambda i, n=name: home.attempt_log(n, i), [], "bench")
            store.attempt_running(name, attempt, os.getpid(), time.time())
            code = 0 if index % 4 else 1
            state = JobState.SUCCEEDED if code == 0 else JobState.FAILED
            reason = None if code == 0 else StatusReason.exit_code(code)
            store.end_attempt(
                name,
                attempt,
                exit_code=code,
                attempt_reason=StatusReason.exit_code(code),
                state=state,
                reason=reason,
            )
        store.mark_archived(name)
    store.close()


def add_live_jobs(root: Path, backend: LocalBackend) -> Path:
    """One running job holding `bench-held` and LIVE_JOBS - 1 waiting behind it; the file that ends it."""
    release = root / "release"
    wait = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.2)\n"
    backend.submit(spec(root, "live-000", "alice", "bench-held", (sys.executable, "-c", wait)), secrets={})
    deadline = time.monotonic() + 60
    while backend.describe("live-000").state is not JobState.RUNNING:
        if time.monotonic() > deadline:
            raise RuntimeError("the running job did not start within 60 s")
        time.sleep(0.05)
    for index in range(1, LIVE_JOBS):
        owner = OWNERS[index % len(OWNERS)]
        backend.submit(spec(root, f"live-{index:03d}", owner, "bench-held", ("true",)), secrets={})
    return release


def timed(argv: list[str], env: dict[str, str], runs: int, lines: int | None = None) -> list[float]:
    """Wall times of `runs` runs of `argv` after a warm-up run, which must print `lines` lines if given."""
    warm_up = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    printed = len(warm_up.stdout.splitlines())
    if lines is not None and printed != lines:
        raise RuntimeError(f"{' '.join(argv)} printed {printed} lines, not {lines}")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the store (default 10,000)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per command (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbm-list-latency-") as tmp:
        root = Path(tmp)
        env = use_temporary_home(root, SITE_YAML.format(root=root))
        home = LocalHome(root / "home")
        started = time.perf_counter()
        fill_history(root, home, args.jobs - LIVE_JOBS)
        backend = LocalBackend(load_site().region("local"), home.root)
        release = add_live_jobs(root, backend)
        print(f"filled the store with {len(backend.list())} jobs in {time.perf_counter() - started:.1f} s")
        try:
            commands = {
                "python -c pass": ([sys.executable, "-c", "pass"], None),
                # Lines: a header (batchy: also a title), then one row per job.
                "sagey ls": ([str(BIN / "sagey"), "ls"], 1 + LIVE_JOBS + 20),
                "sagey ls --all": ([str(BIN / "sagey"), "ls", "--all"], 1 + args.jobs),
                "batchy ls bench-held": ([str(BIN / "batchy"), "ls", "bench-held"], 2 + LIVE_JOBS),
            }
            results = {}
            for label, (argv, lines) in commands.items():
                times = timed(argv, env, args.runs, lines)
                results[label] = {
                    "median_s": round(statistics.median(times), 4),
                    "p90_s": round(statistics.quantiles(times, n=10)[-1], 4),
                    "min_s": round(min(times), 4),
                }
                figures = results[label]
                print(
                    f"{label:<22} median {figures['median_s']:.3f} s  p90 {figures['p90_s']:.3f} s"
                    f"  min {figures['min_s']:.3f} s  ({args.runs} runs)"
                )
            print(
                json.dumps({"jobs": args.jobs, "runs": args.runs, "cpus": os.cpu_count(), "results": results})
            )
        finally:
            release.touch()
            live = [s for s in JobState if not s.is_terminal]
            for job in backend.list(states=live):
                if job.state.is_queued:
                    backend.stop(job.name, reason=StatusReason.CANCELLED_IN_QUEUE)
            # The running job must see the release file before the temporary directory goes.
            deadline = time.monotonic() + 60
            while backend.list(states=live) and time.monotonic() < deadline:
                time.sleep(0.05)
            while agent_running(home) and agent_pid(home) is None:
                time.sleep(0.05)
            stop_agent(home)
            while agent_running(home):
                time.sleep(0.05)
            backend.close()


if __name__ == "__main__":
    main()
