"""`batchy`: look at job queues (the seed's AWS Batch queue tool, on any backend).

Starts fast: nothing here imports torch, Hydra or OmegaConf.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lbm.cli.entry import ArgumentParser, at_least, run
from lbm.cli.sagey import NOT_TERMINAL, TERMINAL, add_site_options, region_from, stop_and_report
from lbm.cli.tables import clock, duration, job_record, print_json, print_table, runtime, sparkline
from lbm.errors import LbmError
from lbm.jobs.model import JobState
from lbm.site.nicknames import add_nickname, nicknames_for, resolve_queue
from lbm.storage.layout import METRICS_FILE

if TYPE_CHECKING:
    from lbm.jobs.backend import Backend
    from lbm.jobs.model import Job
    from lbm.jobs.region import Region

CURVE_WIDTH = 60
# Shown metrics and whether more is better: the losses, then the closed-loop success rate of rollouts.
SHOWN_METRICS = {"train_loss": False, "val_loss": False, "test_mean_score": True}


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="batchy", description="Look at job queues: jobs, completed jobs, metrics, nicknames."
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    list_queues = commands.add_parser("list-queues", help="the region's queues")
    ls = commands.add_parser("ls", help="running and in-queue jobs of a queue")
    ls.add_argument("queue", help="queue name or nickname")
    completed = commands.add_parser("completed-jobs", help="finished jobs of a queue, newest first")
    completed.add_argument("queue", help="queue name or nickname")
    completed.add_argument("--limit", type=at_least(0), default=50, help="at most this many (default 50)")
    cancel = commands.add_parser("cancel", aliases=["cancel-job"], help="remove a waiting job from its queue")
    cancel.add_argument("queue", help="queue name or nickname")
    cancel.add_argument("job")
    cancel.add_argument("--force", action="store_true", help="cancel another user's (or a main) job")
    metrics = commands.add_parser("model-metrics", help="a job's losses and loss curve")
    metrics.add_argument("queue", help="queue name or nickname")
    metrics.add_argument("job")
    nickname = commands.add_parser(
        "add-nickname", aliases=["add-queue"], help="save a short name for a queue"
    )
    nickname.add_argument("nickname")
    nickname.add_argument("queue", help="queue name")
    for sub in (list_queues, ls, completed, metrics):
        sub.add_argument("--json", action="store_true", help="print JSON")
    for sub in (list_queues, ls, completed, cancel, metrics, nickname):
        add_site_options(sub)
    return p


def command(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    region = region_from(args)
    if args.command in ("add-nickname", "add-queue"):
        path = add_nickname(region, args.nickname, args.queue)
        print(f"{args.nickname} -> {resolve_queue(region, args.nickname).name} (saved in {path})")
        return 0
    from lbm.jobs.registry import backend_for, backend_info

    backend = backend_for(region)
    if args.command == "list-queues":
        return list_queues(region, backend, args.json)
    queue = resolve_queue(region, args.queue).name
    if args.command == "ls":
        return list_active(backend, queue, args.json)
    if args.command == "completed-jobs":
        return list_completed(backend, queue, args.limit, args.json)
    if args.command in ("cancel", "cancel-job"):
        return cancel_job(backend, queue, args.job, args.force, backend_info(region.backend).poll_interval_s)
    return model_metrics(job_in_queue(backend, queue, args.job), args.json, backend)


def job_in_queue(backend: Backend, queue: str, name: str) -> Job:
    job = backend.describe(name)
    if job.queue != queue:
        raise LbmError(f"job {name} is in queue {job.queue}, not {queue}")
    return job


def list_queues(region: Region, backend: Backend, as_json: bool) -> int:
    """The queues as the backend serves them (AWS Batch: as AWS has them), with the site's nicknames, and
    the engine's own fair-share figures where it keeps them (`fair_share_figures(queue)`: Slurm's sshare)."""
    queues = backend.queues()
    figures = getattr(backend, "fair_share_figures", None)
    nicknames: dict[str, list[str]] = {}
    for nickname, queue in nicknames_for(region).items():
        nicknames.setdefault(queue, []).append(nickname)
    records = [
        {
            "name": q.name,
            "instance_type": q.instance_type,
            "capacity": q.capacity,
            "team": q.team,
            "share_decay_seconds": q.share_decay_seconds,
            "compute_reservation": q.compute_reservation,
            "weight_factors": q.weight_factors,
            "nicknames": nicknames.get(q.name, []),
            **({"fair_share": figures(q)} if figures else {}),
        }
        for q in queues
    ]
    if as_json:
        print_json(records)
        return 0
    rows = [
        (
            r["name"],
            r["instance_type"],
            r["capacity"],
            r["team"] or "shared",
            duration(r["share_decay_seconds"]),
            f"{r['compute_reservation']:g}%",
            ", ".join(f"{k}={v:g}" for k, v in r["weight_factors"].items()),
            ", ".join(r["nicknames"]),
        )
        for r in records
    ]
    columns = ("NAME", "INSTANCE TYPE", "CAPACITY", "TEAM", "SHARE DECAY", "RESERVED", "WEIGHTS", "NICKNAMES")
    print_table(columns, rows, title=f"queues in region {region.name}")
    if figures:
        shares = {(f["account"], f["user"]): f for r in records for f in r["fair_share"]}
        share_rows = [
            (
                f["account"],
                f["user"] or "-",
                f["raw_shares"],
                f"{f['norm_shares']:.3g}",
                f"{f['effective_usage']:.3g}",
                "-" if f["fair_share"] is None else f"{f['fair_share']:.3g}",
            )
            for f in shares.values()
        ]
        share_columns = ("ACCOUNT", "USER", "SHARES", "NORMALIZED", "USAGE", "FAIR SHARE")
        print_table(share_columns, share_rows, title=f"fair share in the {region.backend} engine")
    return 0


def list_active(backend: Backend, queue: str, as_json: bool) -> int:
    """Running jobs first, then waiting ones in the order they were queued."""
    jobs = backend.list(queue=queue, states=NOT_TERMINAL)
    jobs.sort(key=lambda job: (job.state.is_queued, job.created_at))
    if as_json:
        print_json([job_record(job) for job in jobs])
        return 0
    now = time.time()
    rows = [
        (
            job.name,
            job.state.value,
            job.owner,
            job.spec.share_identifier,
            job.spec.priority,
            clock(job.created_at),
            duration(now - job.created_at if job.started_at is None else None),
            duration(runtime(job, now)),
        )
        for job in jobs
    ]
    columns = ("JOB", "STATE", "OWNER", "SHARE", "PRIORITY", "SUBMITTED", "WAITING", "RUNTIME")
    print_table(
        columns,
        rows,
        title=f"{queue}: {sum(not j.state.is_queued for j in jobs)} running, "
        f"{sum(j.state.is_queued for j in jobs)} in queue",
    )
    return 0


def list_completed(backend: Backend, queue: str, limit: int, as_json: bool) -> int:
    jobs = backend.list(queue=queue, states=TERMINAL, limit=limit)
    if as_json:
        print_json([job_record(job) for job in jobs])
        return 0
    rows = [
        (
            job.name,
            job.state.value,
            job.owner,
            clock(job.stopped_at),
            duration(runtime(job)),
            job.status_reason,
        )
        for job in jobs
    ]
    print_table(
        ("JOB", "STATE", "OWNER", "ENDED", "RUNTIME", "REASON"), rows, title=f"{queue}: completed jobs"
    )
    return 0


def cancel_job(backend: Backend, queue: str, name: str, force: bool, poll_s: float) -> int:
    """Remove a job that waits in the queue (or is starting); a running job is stopped with `sagey stop`."""
    from lbm.jobs.model import StatusReason
    from lbm.launch.owner import check_may_stop

    job = job_in_queue(backend, queue, name)
    if job.state.is_terminal:
        raise LbmError(f"job {name} has already ended ({job.state.value}); there is nothing to cancel")
    if not (job.state.is_queued or job.state in (JobState.SCHEDULED, JobState.STARTING)):
        raise LbmError(
            f"job {name} is {job.state.value}, not waiting in the queue: stop it with `sagey stop {name}`"
        )
    check_may_stop(name, job.owner, force)
    reason = StatusReason.CANCELLED_IN_QUEUE if job.state.is_queued else StatusReason.STOPPED_BY_USER
    return stop_and_report(backend, job, reason, poll_s)


def read_metrics(url: str) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl at any fsspec URL; a torn last line is skipped."""
    import json

    import fsspec

    try:
        with fsspec.open(url, "r") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        raise LbmError(f"no metrics at {url} yet: the job has not logged a step") from None
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Final and best of SHOWN_METRICS (with their step and epoch), per-task success of the last rollouts,
    and one-line curves."""
    summary: dict[str, Any] = {"records": len(records), "final": {}, "best": {}, "curve": {}}
    if records:
        last = records[-1]
        summary["final"] = {"step": last.get("step"), "epoch": last.get("epoch")}
    for key, higher_is_better in SHOWN_METRICS.items():
        points = [r for r in records if isinstance(r.get(key), int | float)]
        if not points:
            continue
        pick = max if higher_is_better else min
        final, best = points[-1], pick(points, key=lambda r: r[key])
        summary["final"][key] = final[key]
        summary["best"][key] = {"value": best[key], "step": best.get("step"), "epoch": best.get("epoch")}
        values = [r[key] for r in points]
        summary["curve"][key] = {
            "line": sparkline(values, CURVE_WIDTH),
            "first": values[0],
            "low": min(values),
            "high": max(values),
        }
    rollouts = [r for r in records if "test_mean_score" in r]
    if rollouts:
        prefix = "test_success_"
        summary["final"]["rollout_step"] = rollouts[-1].get("step")
        summary["final"]["task_success"] = {
            k[len(prefix) :]: v for k, v in rollouts[-1].items() if k.startswith(prefix)
        }
    return summary


def model_metrics(job: Job, as_json: bool, backend: Backend) -> int:
    """The job's metrics.jsonl summed up, and the final metrics of its engine when it keeps them
    (`final_metrics(name)`: SageMaker's FinalMetricDataList)."""
    url = f"{job.artifact_uri.rstrip('/')}/{METRICS_FILE}"
    summary = {"job": job.name, "state": job.state.value, "metrics_uri": url, **summarize(read_metrics(url))}
    engine_metrics = getattr(backend, "final_metrics", None)
    if engine_metrics is not None:
        summary["final_metrics"] = engine_metrics(job.name)
    if as_json:
        print_json(summary)
        return 0
    final, best = summary["final"], summary["best"]
    print(f"job:     {job.name} ({job.state.value})")
    if summary.get("final_metrics"):
        print("engine:  " + ", ".join(f"{k} {v:.6g}" for k, v in summary["final_metrics"].items()))
    print(f"metrics: {url} ({summary['records']} steps logged)")
    print(f"final:   step {final.get('step', '-')}, epoch {final.get('epoch', '-')}")
    rows = [
        (key, _number(final.get(key)), _number(best[key]["value"]), best[key]["step"], best[key]["epoch"])
        for key in SHOWN_METRICS
        if key in best
    ]
    print_table(("METRIC", "FINAL", "BEST", "BEST STEP", "BEST EPOCH"), rows)
    if final.get("task_success"):
        success = ", ".join(f"{task} {rate:.0%}" for task, rate in final["task_success"].items())
        print(f"success: {final['test_mean_score']:.0%} at step {final['rollout_step']} ({success})")
    for key, curve in summary["curve"].items():
        print(
            f"{key:<11} {curve['line']}  {curve['first']:.4g} -> {final[key]:.4g} "
            f"(range {curve['low']:.4g} to {curve['high']:.4g})"
        )
    return 0


def _number(value: float | None) -> str | None:
    return None if value is None else f"{value:.6g}"


def main(argv: Sequence[str] | None = None) -> int:
    return run("batchy", command, argv)


if __name__ == "__main__":
    sys.exit(main())
