"""The Slurm commands lbm runs, one function each, reading their machine-readable output.

`squeue --json` and `sinfo --json` (Slurm 21.08 and later) and `sacct --parsable2` answer for all jobs or
nodes in one call; `scontrol show partition -o` and `sshare -P` give one parsable line per partition or
association. A command that Slurm
refuses raises `SlurmCommandError` with Slurm's own message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lbm.errors import LbmError

TIMEOUT_S = 120


class SlurmCommandError(LbmError):
    """A Slurm command exited non-zero; the message is its first error line."""


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, input: str | None = None) -> str:
    """Run a Slurm client command; its standard output."""
    if shutil.which(argv[0]) is None:
        raise LbmError(
            f"{argv[0]} is not on PATH: run lbm on a Slurm login node (or install the Slurm client)"
        )
    try:
        result = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=None if env is None else {**os.environ, **env},
        )
    except subprocess.TimeoutExpired:
        raise SlurmCommandError(f"{argv[0]} did not answer within {TIMEOUT_S}s (is slurmctld up?)") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        message = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
        raise SlurmCommandError(f"{argv[0]} failed: {message or f'exit status {result.returncode}'}")
    return result.stdout


@dataclass(frozen=True)
class SlurmJob:
    """One job (one attempt of it, for sacct with duplicates) as Slurm reports it. Times are Unix seconds;
    `start_time` is None for a job that never got nodes (Slurm gives a pending job its expected start, and a
    cancelled one its end)."""

    job_id: str
    name: str
    state: str
    reason: str | None
    partition: str
    account: str
    user: str
    submit_time: float | None
    start_time: float | None
    end_time: float | None
    restart_count: int
    nodes: str
    exit_code: int | None
    node_count: int = 1


def _time(value) -> float | None:
    return float(value) if value else None


def _exit_code(status: int | None) -> int | None:
    """squeue's raw wait status as a shell's exit status (signal N -> 128 + N)."""
    if status is None:
        return None
    return 128 + (status & 0x7F) if status & 0x7F else status >> 8


def squeue_jobs(user: str | None = None) -> list[SlurmJob]:
    """Every job slurmctld holds (queued, running, and ended within MinJobAge), of `user` when given.

    Slurm 22.05's `squeue --json` answers with every job whatever the filters, so `user` is applied here."""
    jobs = json.loads(run(["squeue", "--json"]))["jobs"]
    return [
        SlurmJob(
            job_id=str(job["job_id"]),
            name=job["name"],
            state=job["job_state"],
            reason=job.get("state_reason"),
            partition=job["partition"],
            account=job["account"],
            user=job["user_name"],
            submit_time=_time(job.get("submit_time")),
            start_time=_time(job.get("start_time")) if job.get("nodes") else None,
            end_time=_time(job.get("end_time")) if job["job_state"] not in ("PENDING", "RUNNING") else None,
            restart_count=int(job.get("restart_cnt") or 0),
            nodes=job.get("nodes") or "",
            exit_code=_exit_code(job.get("exit_code")),
            node_count=int(job.get("node_count") or 1),
        )
        for job in jobs
        if user is None or job["user_name"] == user
    ]


SACCT_FIELDS = "JobIDRaw,State,Reason,Partition,Account,User,Submit,Start,End,NodeList,ExitCode,JobName"


def _epoch(text: str) -> float | None:
    return float(text) if text.isdigit() and text != "0" else None


def _sacct_exit(text: str) -> int | None:
    """sacct's `code:signal` as a shell's exit status (signal N -> 128 + N)."""
    code, _, signal = text.partition(":")
    if not code.isdigit():
        return None
    return 128 + int(signal) if signal.isdigit() and int(signal) else int(code)


def sacct_jobs(
    user: str | None = None, *, since: str = "1970-01-01", job_ids: Sequence[str] = (), attempts: bool = False
) -> list[SlurmJob]:
    """Jobs from the accounting database (every state), submitted since `since`; with `attempts`, one
    entry per try of a requeued job (`--duplicates`), oldest first.

    Parsable output, not `--json`: Slurm 22.05's JSON gives every job exit code 0. For a moment after a short
    job ends, slurmdbd may hold its end but not yet its name (`allocation`): live jobs are read from squeue.
    The job name is the last field, so a `|` in it is kept."""
    argv = ["sacct", "--allocations", "--parsable2", "--noheader", f"--format={SACCT_FIELDS}"]
    argv += [f"--starttime={since}", f"--user={user}" if user else "--allusers"]
    if job_ids:
        argv.append(f"--jobs={','.join(job_ids)}")
    if attempts:
        argv.append("--duplicates")
    result = []
    for line in run(argv, env={"SLURM_TIME_FORMAT": "%s"}).splitlines():
        if not line.strip():
            continue
        job_id, state, reason, partition, account, user_name, submit, start, end, nodes, code, name = (
            line.split("|", 11)
        )
        result.append(
            SlurmJob(
                job_id=job_id,
                name=name,
                state=state,
                reason=reason,
                partition=partition,
                account=account,
                user=user_name,
                submit_time=_epoch(submit),
                start_time=_epoch(start) if nodes != "None assigned" else None,
                end_time=_epoch(end),
                restart_count=0,
                nodes="" if nodes == "None assigned" else nodes,
                exit_code=_sacct_exit(code),
            )
        )
    return result


def sbatch(script: str, options: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Submit `script` (given on stdin) with `options`; the new job's id."""
    out = run(["sbatch", "--parsable", *options], input=script, env=env)
    return out.strip().split(";")[0]


def scancel(job_id: str, *, signal: str | None = None, batch: bool = False) -> None:
    """Cancel a job, or send it `signal` (to every step, or with `batch` to the batch shell alone)."""
    argv = ["scancel"]
    if signal:
        argv.append(f"--signal={signal}")
    if batch:
        argv.append("--batch")
    run([*argv, job_id])


@dataclass(frozen=True)
class Partition:
    """A partition: its nodes, GPUs per node (the fewest of its nodes), time limit and allowed accounts."""

    name: str
    nodes: tuple[str, ...]
    gpus_per_node: int
    cpus: int
    max_time_s: float | None
    allow_accounts: tuple[str, ...] | None
    default: bool


def duration_s(text: str) -> float | None:
    """Slurm's `[days-]hours:minutes:seconds` (or `minutes`) in seconds; None for UNLIMITED."""
    if text.upper() in ("UNLIMITED", "INFINITE", "NONE", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
    elif len(parts) < 3:  # minutes[:seconds]
        parts = [0, *parts, *[0] * (2 - len(parts))]
    hours, minutes, seconds = parts
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def _fields(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def gpus(gres: str) -> int:
    """The GPU count in a gres string such as `gpu:2`, `gpu:a100:4(S:0-1)`, `gpu:0,tmpdisk:10`."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) > 1 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


@dataclass(frozen=True)
class Node:
    """A node as sinfo reports it: state, CPUs and GPUs in all and in use, its partitions."""

    name: str
    state: str
    partitions: tuple[str, ...]
    cpus: int
    cpus_used: int
    gpus: int
    gpus_used: int
    address: str


def nodes() -> list[Node]:
    return [
        Node(
            name=node["name"],
            state=node["state"],
            partitions=tuple(node.get("partitions") or ()),
            cpus=int(node.get("cpus") or 0),
            cpus_used=int(node.get("alloc_cpus") or 0),
            gpus=gpus(node.get("gres") or ""),
            gpus_used=gpus(node.get("gres_used") or ""),
            address=node.get("address") or node["name"],
        )
        for node in json.loads(run(["sinfo", "--json"]))["nodes"]
    ]


def partitions() -> list[Partition]:
    """Every partition, with its nodes and GPUs per node from sinfo (two calls in all)."""
    all_nodes = nodes()
    result = []
    for line in run(["scontrol", "show", "partition", "--oneliner"]).splitlines():
        if not line.strip():
            continue
        fields = _fields(line)
        name = fields["PartitionName"]
        members = [n for n in all_nodes if name in n.partitions]
        accounts = fields.get("AllowAccounts", "ALL")
        result.append(
            Partition(
                name=name,
                nodes=tuple(n.name for n in members),
                gpus_per_node=min((n.gpus for n in members), default=0),
                cpus=int(fields.get("TotalCPUs", 0)),
                max_time_s=duration_s(fields.get("MaxTime", "UNLIMITED")),
                allow_accounts=None if accounts == "ALL" else tuple(accounts.split(",")),
                default=fields.get("Default") == "YES",
            )
        )
    return result


def cluster_name() -> str:
    """The name slurm.conf gives the cluster."""
    for line in run(["scontrol", "show", "config"]).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName":
            return value.strip()
    raise SlurmCommandError("scontrol show config names no ClusterName")


@dataclass(frozen=True)
class Share:
    """One account's (or user-in-account's) fair-share figures from sshare."""

    account: str
    user: str
    raw_shares: str
    norm_shares: float
    raw_usage: float
    effective_usage: float
    fair_share: float | None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def shares() -> list[Share]:
    """Fair-share figures of every association (`sshare --all --parsable2`)."""
    lines = run(
        [
            "sshare",
            "--all",
            "--parsable2",
            "--noheader",
            "--format",
            "Account,User,RawShares,NormShares,RawUsage,EffectvUsage,FairShare",
        ]
    ).splitlines()
    result = []
    for line in lines:
        account, user, raw_shares, norm, usage, effective, fair = (part.strip() for part in line.split("|"))
        result.append(
            Share(
                account,
                user,
                raw_shares,
                _float(norm) or 0.0,
                _float(usage) or 0.0,
                _float(effective) or 0.0,
                _float(fair),
            )
        )
    return result


def user_accounts(user: str) -> set[str]:
    """The accounts `user` may charge jobs to (their associations in slurmdbd)."""
    out = run(
        ["sacctmgr", "--noheader", "--parsable2", "show", "associations", f"users={user}", "format=Account"]
    )
    return {line.strip() for line in out.splitlines() if line.strip()}
