"""`lbm launch`: submit a training job to a queue and watch it reach RUNNING (or follow it to the end)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbm.cli.entry import ArgumentParser
from lbm.jobs.model import Job, JobState
from lbm.launch.spec import DEFAULT_CONFIG

if TYPE_CHECKING:
    from lbm.jobs.backend import Backend
    from lbm.launch.spec import LaunchSpec
    from lbm.launch.submission import Submission


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="lbm launch",
        description="Submit a training job. A --launcher-file sets a kind of run; flags win.",
    )
    add_launch_arguments(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-wait", action="store_true", help="return once the job is queued")
    mode.add_argument("--follow", action="store_true", help="stream the job's log until it ends")
    mode.add_argument("--dry-run", action="store_true", help="print the submission and queue nothing")
    return p


def add_launch_arguments(p: ArgumentParser) -> None:
    """The flags that say what to launch and where (shared with `lbm sweep`)."""
    p.add_argument("--launcher-file", help="YAML with launch settings (config_file, instance_type, ...)")
    p.add_argument(
        "--config-file",
        help=f"training config name (default: {DEFAULT_CONFIG}, which needs --config-overrides "
        "task.dataset_path=URL)",
    )
    p.add_argument("--config-dir", help="a directory of your own training configs")
    p.add_argument(
        "--config-overrides",
        help='comma-separated Hydra overrides, e.g. "training.val_every=5,policy.down_dims=[64,128,256]"',
    )
    p.add_argument("--num-epochs", type=int, help="training.num_epochs")
    p.add_argument("--batch-size", type=int, help="dataloader.batch_size")
    p.add_argument("--task-name", help="train on this one task (single-task training)")
    p.add_argument("--image-uri", help="the image to run (default: the region's main image)")
    p.add_argument("--instance-type", help="instance type or alias (e.g. p4d, p4de, p5, cpu)")
    p.add_argument("--instance-count", type=int, help="machines for the job (multi-machine backends only)")
    p.add_argument("--nproc-per-node", type=int, help="training processes (GPUs) per machine")
    p.add_argument("--region", help="the site region (default: $AWS_DEFAULT_REGION or the site's default)")
    p.add_argument("--queue", help="queue name or nickname (default: chosen by instance type and team)")
    p.add_argument("--team", help="team with its own prototyping queue (mvdp, vla, dp, das)")
    p.add_argument("--priority", type=int, help="0-9999, higher runs first within a share")
    p.add_argument("--max-days", type=float, help="stop the job after this many days")
    p.add_argument("--retries", type=int, help="attempts after a failed one (resume from checkpoints)")
    p.add_argument("--profile", help="AWS profile (sets AWS_PROFILE)")


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.profile:
        os.environ["AWS_PROFILE"] = args.profile
    from lbm.jobs.registry import backend_for, backend_info
    from lbm.launch.submission import check_bucket, plan, submit
    from lbm.site import load_site

    submission = plan(launch_spec_of(args), load_site())
    backend = backend_for(submission.region)
    if args.dry_run:
        return print_dry_run(submission, backend)
    for note in [*submission.notes, *backend.check(submission.job_spec(sample_name(submission)))]:
        print(f"note: {note}", flush=True)

    from lbm.secrets import submitter_secrets

    check_bucket(submission.region)
    job = submit(submission, backend, secrets=submitter_secrets())
    print(f"job:       {job.name}")
    print(f"queue:     {job.queue} ({job.spec.instance_type}, region {submission.region.name})")
    print(f"artifacts: {job.artifact_uri}", flush=True)
    print_state(job)
    if args.no_wait:
        return 0
    try:
        poll_s = backend_info(submission.region.backend).poll_interval_s
        return wait_and_report(backend, job, args.follow, poll_s)
    except KeyboardInterrupt:
        print(f"\njob {job.name} goes on; stop it with: sagey stop {job.name}", file=sys.stderr)
        return 130


def launch_spec_of(args: argparse.Namespace) -> LaunchSpec:
    """The LaunchSpec the launch flags (and their --launcher-file) ask for."""
    from lbm.launch.overrides import split_overrides
    from lbm.launch.spec import SETTINGS, launch_spec, read_launcher_file

    file_settings = read_launcher_file(args.launcher_file) if args.launcher_file else {}
    flags = {name: getattr(args, name) for name in SETTINGS if name != "config_overrides"}
    flags["config_overrides"] = split_overrides(args.config_overrides) if args.config_overrides else None
    return launch_spec(file_settings, flags)


def wait_and_report(backend: Backend, job: Job, follow: bool, poll_s: float) -> int:
    """Watch the job to RUNNING (0) or FAILED (1); with `follow`, stream its log to the end (SUCCEEDED: 0)."""
    job = watch(backend, job, until=frozenset({JobState.RUNNING}), poll_s=poll_s)
    if follow:
        for line in backend.logs(job.name, from_head=True, follow=True):
            print(line.rstrip("\n"), flush=True)
        job = watch(backend, job, until=frozenset(), poll_s=poll_s)
        print(f"artifacts: {job.artifact_uri}")
    elif job.state is JobState.RUNNING:
        print(f"follow its log with: sagey logs {job.name}")
    return 1 if job.state is JobState.FAILED else 0


def print_state(job: Job, state: JobState | None = None, at: float | None = None) -> None:
    """A line for the job's `state` (default: its current one) entered at `at` (default: now)."""
    state = state or job.state
    reason = f" - {job.status_reason}" if job.status_reason and state is JobState.FAILED else ""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} {state.value}{reason}", flush=True)


def watch(backend: Backend, job: Job, until: frozenset[JobState], poll_s: float) -> Job:
    """Poll the job (whose state `job` was last printed) and print each new state, until it reaches one
    of `until` or ends; the job then. Polls every `poll_s` (the backend's tolerated interval) at first,
    slowing down to once a second (or `poll_s`, if longer) while nothing changes. Where the backend keeps
    the job's transitions, every state it went through is printed, also those between two polls."""
    interval = fastest = poll_s
    printed = len(job.transitions) or 1
    while True:
        seen = backend.describe(job.name)
        if seen.transitions[printed:]:
            for state, at in seen.transitions[printed:]:
                print_state(seen, state, at)
            printed = len(seen.transitions)
            interval = fastest
        elif seen.state is not job.state:
            print_state(seen)
            interval = fastest
        job = seen
        if job.state in until or job.state.is_terminal:
            return job
        time.sleep(interval)
        interval = min(max(1.0, fastest), interval * 1.2)


def sample_name(submission: Submission) -> str:
    """A job name of this submission as of now (the name `submit` tries first)."""
    from datetime import UTC, datetime

    from lbm.launch.names import job_name

    return job_name(submission.owner, datetime.now(UTC), submission.launch.task_name)


def print_dry_run(submission: Submission, backend: Backend) -> int:
    """The request the backend would get, as JSON (config included; secrets are never part of it)."""
    from lbm.cli.tables import print_json

    request = backend.dry_run(submission.job_spec(sample_name(submission)))
    print("# dry run: nothing was queued; the job would get WANDB_API_KEY from your environment or ~/.netrc")
    for note in submission.notes:
        print(f"# note: {note}")
    print_json(request)
    return 0
