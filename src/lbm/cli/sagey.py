"""`sagey`: list, watch, describe and stop training jobs (the seed's SageMaker job tool, on any backend).

Starts fast: nothing here imports torch, Hydra or OmegaConf.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbm.cli.entry import ArgumentParser, at_least, run
from lbm.cli.tables import clock, duration, job_record, print_json, print_table, runtime
from lbm.jobs.model import JobState

if TYPE_CHECKING:
    import argparse

    from lbm.jobs.backend import Backend
    from lbm.jobs.model import Job
    from lbm.jobs.region import Region

TERMINAL = (JobState.SUCCEEDED, JobState.FAILED)
NOT_TERMINAL = tuple(state for state in JobState if not state.is_terminal)
# How long `stop` waits for a running job's processes to exit (the backend kills them after its grace period).
STOP_WAIT_S = 30.0


def add_site_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", help="the site region (default: $AWS_DEFAULT_REGION or the site's default)")
    p.add_argument("--profile", help="AWS profile (sets AWS_PROFILE)")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="sagey", description="List, watch, describe and stop training jobs.")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    ls = commands.add_parser("ls", help="waiting and running jobs, and the newest that have ended")
    ended = ls.add_mutually_exclusive_group()
    ended.add_argument(
        "--limit", type=at_least(0), default=20, help="also the newest N jobs that have ended (default 20)"
    )
    ended.add_argument("--all", action="store_true", help="also show every job that has ended")
    ls.add_argument("--mine", action="store_true", help="only your jobs")
    ls.add_argument("--json", action="store_true", help="print JSON")
    usage = commands.add_parser("usage", help="running and pending jobs and the quota per instance type")
    usage.add_argument("--json", action="store_true", help="print JSON")
    stop = commands.add_parser("stop", help="stop a running job or cancel a queued one")
    stop.add_argument("job")
    stop.add_argument("--force", action="store_true", help="stop another user's (or a main) job")
    logs = commands.add_parser("logs", help="a job's log: the tail, following while it runs")
    logs.add_argument("job")
    logs.add_argument("--startfromhead", action="store_true", help="from the first line")
    logs.add_argument("--no-follow", action="store_true", help="print what there is and return")
    describe = commands.add_parser("describe", help="everything about one job")
    describe.add_argument("job")
    describe.add_argument("--json", action="store_true", help="print JSON")
    for sub in (ls, usage, stop, logs, describe):
        add_site_options(sub)
    return p


def region_from(args: argparse.Namespace) -> Region:
    """The region the flags (or AWS_DEFAULT_REGION) name; `--profile` sets AWS_PROFILE."""
    if args.profile:
        os.environ["AWS_PROFILE"] = args.profile
    from lbm.site import load_site

    return load_site().region(args.region)


def command(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    from lbm.jobs.registry import backend_for, backend_info

    region = region_from(args)
    backend = backend_for(region)
    if args.command == "ls":
        return list_jobs(backend, args)
    if args.command == "usage":
        return show_usage(backend, args.json)
    if args.command == "stop":
        return stop_job(backend, args.job, args.force, backend_info(region.backend).poll_interval_s)
    if args.command == "logs":
        return print_logs(backend, args.job, args.startfromhead, not args.no_follow)
    return describe_job(backend.describe(args.job), args.json)


def list_jobs(backend: Backend, args: argparse.Namespace) -> int:
    owner = None
    if args.mine:
        from lbm.launch.owner import current_user

        owner = current_user()
    active = backend.list(states=NOT_TERMINAL, owner=owner)
    if args.all:
        ended = backend.list(states=TERMINAL, owner=owner)
    else:
        ended = backend.list(states=TERMINAL, owner=owner, limit=args.limit) if args.limit else []
    jobs = sorted([*active, *ended], key=lambda job: job.created_at, reverse=True)
    if args.json:
        print_json([job_record(job) for job in jobs])
        return 0
    now = time.time()
    rows = [
        (
            job.name,
            job.state.value,
            job.queue,
            job.owner,
            clock(job.created_at),
            duration(runtime(job, now)),
            job.status_reason,
        )
        for job in jobs
    ]
    print_table(("JOB", "STATE", "QUEUE", "OWNER", "CREATED", "RUNTIME", "REASON"), rows)
    return 0


def show_usage(backend: Backend, as_json: bool) -> int:
    by_type: dict[str, dict] = {}
    for usage in backend.usage():
        entry = by_type.setdefault(
            usage.instance_type,
            {"instance_type": usage.instance_type, "running": 0, "pending": 0, "quota": 0, "queues": []},
        )
        entry["running"] += usage.running
        entry["pending"] += usage.pending
        entry["quota"] += usage.capacity
        entry["queues"].append(
            {
                "queue": usage.queue,
                "running": usage.running,
                "pending": usage.pending,
                "capacity": usage.capacity,
            }
        )
    if as_json:
        print_json(list(by_type.values()))
        return 0
    rows = [
        (
            e["instance_type"],
            e["running"],
            e["pending"],
            e["quota"],
            ", ".join(q["queue"] for q in e["queues"]),
        )
        for e in by_type.values()
    ]
    print_table(("INSTANCE TYPE", "RUNNING", "PENDING", "QUOTA", "QUEUES"), rows)
    return 0


def stop_job(backend: Backend, name: str, force: bool, poll_s: float) -> int:
    """Stop a running job or cancel a queued one; another user's job needs `force`."""
    from lbm.errors import LbmError
    from lbm.jobs.model import StatusReason
    from lbm.launch.owner import check_may_stop

    job = backend.describe(name)
    if job.state.is_terminal:
        raise LbmError(f"job {name} has already ended ({job.state.value}); there is nothing to stop")
    check_may_stop(name, job.owner, force)
    reason = StatusReason.CANCELLED_IN_QUEUE if job.state.is_queued else StatusReason.STOPPED_BY_USER
    return stop_and_report(backend, job, reason, poll_s)


def stop_and_report(backend: Backend, job: Job, reason: str, poll_s: float) -> int:
    """Stop the job, wait (a while, polling every `poll_s`, the backend's tolerated interval, or 0.1 s) until
    its processes are gone, and print how it ended."""
    poll_s = max(0.1, poll_s)
    stopped = backend.stop(job.name, reason=reason)
    deadline = time.monotonic() + STOP_WAIT_S
    while not stopped.state.is_terminal and time.monotonic() < deadline:
        time.sleep(poll_s)
        stopped = backend.describe(job.name)
    if stopped.state.is_terminal:
        print(f"{job.name}: {job.state.value} -> {stopped.state.value} ({stopped.status_reason})")
    else:
        print(f"{job.name}: stop requested ({reason}); still {stopped.state.value} until its processes exit")
    return 0


def print_logs(backend: Backend, name: str, from_head: bool, follow: bool) -> int:
    """Write the log lines as they come, flushing each (so `| grep wandb.ai` sees them at once)."""
    try:
        for line in backend.logs(name, from_head=from_head, follow=follow):
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def describe_job(job: Job, as_json: bool) -> int:
    record = job_record(job)
    if as_json:
        print_json(record)
        return 0
    spec = job.spec
    fields = [
        ("job", job.name),
        ("state", job.state.value + (f" - {job.status_reason}" if job.status_reason else "")),
        ("owner", spec.owner),
        ("queue", f"{spec.queue} (region {spec.region})"),
        ("instance", f"{spec.instance_count} x {spec.instance_type}, {spec.nproc_per_node} process(es) each"),
        ("share", f"{spec.share_identifier}, priority {spec.priority}"),
        ("created", clock(job.created_at)),
        ("started", clock(job.started_at)),
        ("stopped", clock(job.stopped_at)),
        ("runtime", duration(runtime(job))),
        ("max runtime", duration(spec.max_runtime_s)),
        ("retries", spec.retries),
        ("image", spec.image_uri),
        ("task", spec.task_name),
        ("artifacts", spec.artifact_uri),
        ("command", shlex.join(spec.command)),
    ]
    if job.engine_id:
        fields.insert(1, ("engine id", job.engine_id))
    if job.transitions:
        fields.insert(2, ("states", " -> ".join(f"{s.value} {clock(at)[11:]}" for s, at in job.transitions)))
    for key, value in fields:
        print(f"{key + ':':<13}{'-' if value is None else value}")
    if job.attempts:
        rows = [
            (a.index, clock(a.started_at), clock(a.stopped_at), a.exit_code, a.status_reason, a.log_uri)
            for a in job.attempts
        ]
        print()
        print_table(("ATTEMPT", "STARTED", "STOPPED", "EXIT", "REASON", "LOG"), rows)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run("sagey", command, argv)


if __name__ == "__main__":
    sys.exit(main())
