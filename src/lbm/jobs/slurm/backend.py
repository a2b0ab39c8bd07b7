"""`SlurmBackend`: the Backend protocol on a Slurm cluster; Slurm schedules (fair share through slurmdbd).

A queue is a partition (with an account and QOS when the site names them; else the job's team is its
account). Each job has a small record under the region's state dir (`<stateDir>/jobs/<name>.json`: its spec,
Slurm job id and a stop reason) and a run dir beside it (`runs/<name>/`: the batch log, one log per node and
attempt, the output dir). Its state is Slurm's: one `squeue` call answers for every job a listing shows, and
one `sacct` call for those slurmctld has already forgotten.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lbm.errors import LbmError
from lbm.jobs.backend import JobNameTaken, unknown_job
from lbm.jobs.environment import ATTEMPT, job_environment
from lbm.jobs.local.home import lbm_home
from lbm.jobs.model import Attempt, Job, JobSpec, JobState, Queue, QueueUsage
from lbm.jobs.region import Region, Site
from lbm.jobs.slurm import commands
from lbm.jobs.slurm.commands import SlurmJob
from lbm.jobs.slurm.script import CHECKPOINT_SIGNAL, BatchJob, batch_script, training_step
from lbm.jobs.slurm.states import job_state
from lbm.secrets import SECRET_ENV_NAMES

TAIL_LINES = 100
FOLLOW_POLL_S = 0.5
BATCH_LOG = "batch.log"


class RegionSettings(BaseModel):
    """The region's `slurm` block: where job records and runs live (a path every node sees), and the Python
    the nodes run (default: this one)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    state_dir: str | None = Field(None, alias="stateDir", min_length=1)
    python: str | None = Field(None, min_length=1)


class QueueSettings(BaseModel):
    """A queue's `slurm` block: its partition, and the account and QOS its jobs are charged to.

    `priorityQos` is the QOS of a job with `--priority` above 0 (Slurm lets users lower, not raise, their
    own jobs' priority)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    partition: str = Field(min_length=1)
    account: str | None = Field(None, min_length=1)
    qos: str | None = Field(None, min_length=1)
    priority_qos: str | None = Field(None, alias="priorityQos", min_length=1)


class SlurmBackend:
    """Jobs of `region` (a region whose backend is `slurm`) on the cluster that SLURM_CONF names."""

    RegionSettings = RegionSettings
    QueueSettings = QueueSettings

    def __init__(self, region: Region):
        self.region = region
        self.settings = RegionSettings.model_validate(region.settings)
        default = lbm_home() / "slurm" / region.name
        self.state_dir = Path(self.settings.state_dir).expanduser() if self.settings.state_dir else default
        self.python = self.settings.python or sys.executable
        self._partitions: dict[str, commands.Partition] | None = None

    def partitions(self) -> dict[str, commands.Partition]:
        """The cluster's partitions by name, read once per backend (one command's life)."""
        if self._partitions is None:
            self._partitions = {p.name: p for p in commands.partitions()}
        return self._partitions

    @classmethod
    def builtin_site(cls) -> Site:
        """One region for this machine's cluster: a queue per partition (the default first), its capacity
        the partition's nodes, and the bucket `file://$LBM_HOME/bucket`."""
        name = commands.cluster_name()
        partitions = sorted(commands.partitions(), key=lambda p: not p.default)
        queues = [
            Queue(
                name=p.name,
                instance_type=p.name,
                capacity=len(p.nodes),
                settings=QueueSettings(partition=p.name).model_dump(mode="json", by_alias=True),
            )
            for p in partitions
        ]
        region = Region(
            name=name,
            backend="slurm",
            bucket=f"file://{lbm_home() / 'bucket'}",
            prefix="outputs",
            queues=queues,
            settings=RegionSettings().model_dump(mode="json", by_alias=True),
        )
        return Site(regions={name: region}, default_region=name)

    # --- paths and records ---------------------------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise unknown_job(name)
        return self.state_dir / "jobs" / f"{name}.json"

    def run_dir(self, name: str) -> Path:
        return self.state_dir / "runs" / name

    def _read_record(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(self._record_path(name).read_text())
        except FileNotFoundError:
            raise unknown_job(name) from None

    def _write_record(self, record: dict[str, Any]) -> None:
        path = self._record_path(record["spec"]["name"])
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        partial.write_text(json.dumps(record))
        os.replace(partial, path)

    def _records(self) -> list[dict[str, Any]]:
        records = []
        for path in (self.state_dir / "jobs").glob("*.json"):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return records

    # --- checking and queueing -----------------------------------------------------------------------------

    def _queue_settings(self, spec: JobSpec) -> QueueSettings:
        return QueueSettings.model_validate(self.region.queue(spec.queue).settings)

    def _account(self, spec: JobSpec, settings: QueueSettings) -> str | None:
        """The queue's account, else the job's team (a team is an account); None: the user's default."""
        return settings.account or spec.team

    def check(self, spec: JobSpec) -> list[str]:
        """LbmError for what Slurm would refuse or never run: an unknown partition or account, more nodes,
        GPUs per node or time than the partition has."""
        settings = self._queue_settings(spec)
        partitions = self.partitions()
        partition = partitions.get(settings.partition)
        if partition is None:
            raise LbmError(
                f"queue {spec.queue}: partition {settings.partition!r} is not on this cluster; "
                f"partitions: {', '.join(partitions)}"
            )
        if spec.instance_count > len(partition.nodes):
            raise LbmError(
                f"--instance-count {spec.instance_count} is more than partition {partition.name} has "
                f"({len(partition.nodes)} nodes): use --instance-count {len(partition.nodes)} or less"
            )
        if partition.gpus_per_node and spec.nproc_per_node > partition.gpus_per_node:
            raise LbmError(
                f"--nproc-per-node {spec.nproc_per_node} is more than the {partition.gpus_per_node} GPUs per "
                f"node of partition {partition.name}: use --nproc-per-node {partition.gpus_per_node} or less"
            )
        limit = partition.max_time_s
        if spec.max_runtime_s is not None and limit is not None and spec.max_runtime_s > limit:
            raise LbmError(
                f"--max-days {spec.max_runtime_s / 86400:g} is beyond the time limit of partition "
                f"{partition.name} ({limit / 86400:g} days)"
            )
        account = self._account(spec, settings)
        if account is not None:
            user = getpass.getuser()
            if account not in commands.user_accounts(user):
                raise LbmError(
                    f"Slurm account {account!r} is not one that user {user} may use "
                    "(see: sacctmgr show associations user=$USER); pick another --team or queue"
                )
            if partition.allow_accounts is not None and account not in partition.allow_accounts:
                raise LbmError(f"partition {partition.name} does not take jobs of account {account!r}")
        notes = []
        if spec.priority > 0 and not settings.priority_qos:
            notes.append(
                f"--priority {spec.priority}: Slurm lets a user lower, not raise, a job's priority, and "
                f"queue {spec.queue} names no priorityQos; the job runs at the partition's priority"
            )
        return notes

    def _request(self, spec: JobSpec) -> tuple[list[str], str]:
        """(sbatch options, batch script) for the job."""
        settings = self._queue_settings(spec)
        run_dir = self.run_dir(spec.name)
        options = [
            f"--job-name={spec.name}",
            f"--partition={settings.partition}",
            f"--nodes={spec.instance_count}",
            "--ntasks-per-node=1",
            "--requeue",
            f"--signal={CHECKPOINT_SIGNAL}",
            f"--output={run_dir / BATCH_LOG}",
            "--open-mode=append",
            f"--chdir={run_dir}",
        ]
        account = self._account(spec, settings)
        if account:
            options.append(f"--account={account}")
        qos = settings.priority_qos if spec.priority > 0 and settings.priority_qos else settings.qos
        if qos:
            options.append(f"--qos={qos}")
        partition = self.partitions().get(settings.partition)
        if partition is not None and partition.gpus_per_node:
            options.append(f"--gpus-per-node={spec.nproc_per_node}")
        if spec.max_runtime_s is not None:
            options.append(f"--time={math.ceil(spec.max_runtime_s / 60)}")
        output_dir = run_dir / "output"
        env = job_environment(spec, attempt=0, output_dir=output_dir)
        env.pop(ATTEMPT)  # the batch script sets it, from Slurm's restart count
        job = BatchJob(
            name=spec.name,
            step=self._step(spec),
            retries=spec.retries,
            run_dir=str(run_dir),
            env=env,
            after=(self.python, "-m", "lbm.jobs.slurm.archive", str(run_dir)),
        )
        return options, batch_script(job)

    def _step(self, spec: JobSpec) -> tuple[str, ...]:
        """What runs on each node: `lbm train ...` becomes torchrun of it; any other command runs as it is."""
        if spec.command[:2] != ("lbm", "train"):
            return spec.command
        args = list(spec.command[2:])
        if "--nproc-per-node" in args:
            at = args.index("--nproc-per-node")
            del args[at : at + 2]
        return training_step(args, spec.nproc_per_node, self.python)

    def dry_run(self, spec: JobSpec) -> dict[str, Any]:
        """The sbatch call (options and batch script) this job would be; secrets never appear in either."""
        notes = self.check(spec)
        options, script = self._request(spec)
        return {"sbatch": ["sbatch", "--parsable", *options], "script": script, "notes": notes}

    def submit(self, spec: JobSpec, secrets: Mapping[str, str]) -> Job:
        """sbatch the job; `secrets` reach it through sbatch's environment, never its record or script."""
        leaked = sorted(set(spec.env) & {*SECRET_ENV_NAMES, *secrets})
        if leaked:
            raise LbmError(f"JobSpec.env must not hold secrets ({', '.join(leaked)}); pass them as `secrets`")
        self.check(spec)
        options, script = self._request(spec)
        record = {
            "spec": {**dataclasses.asdict(spec), "resolved_config": ""},
            "engine_id": None,
            "created_at": time.time(),
            "stop_reason": None,
        }
        path = self._record_path(spec.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x") as file:
                json.dump(record, file)
        except FileExistsError:
            raise JobNameTaken(f"a job named {spec.name!r} exists") from None
        try:
            (self.run_dir(spec.name) / "logs").mkdir(parents=True, exist_ok=True)
            record["engine_id"] = commands.sbatch(script, options, env=dict(secrets))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._write_record(record)
        return self._job(record, None)

    # --- reading -------------------------------------------------------------------------------------------

    def _attempts_logged(self, name: str) -> int:
        """How many attempts wrote a node log (0 when none started)."""
        indices = [
            int(path.name.split("-")[1])
            for path in (self.run_dir(name) / "logs").glob("attempt-*-*.log")
            if path.name.split("-")[1].isdigit()
        ]
        return max(indices, default=-1) + 1

    def _job(self, record: dict[str, Any], slurm: SlurmJob | None) -> Job:
        spec_data = dict(record["spec"])
        spec_data["command"] = tuple(spec_data["command"])
        spec = JobSpec(**spec_data)
        job = Job(spec=spec, state=JobState.SUBMITTED, created_at=record["created_at"])
        job.engine_id = record["engine_id"]
        if slurm is None:
            return job
        job.state, job.status_reason = job_state(slurm.state, slurm.reason, slurm.exit_code)
        if job.state is JobState.FAILED and record.get("stop_reason"):
            job.status_reason = record["stop_reason"]
        job.started_at = slurm.start_time
        job.stopped_at = slurm.end_time if job.state.is_terminal else None
        count = max(slurm.restart_count + 1, self._attempts_logged(spec.name), 1)
        job.attempts = [Attempt(index=i) for i in range(count)]
        last = job.attempts[-1]
        last.started_at, last.stopped_at = job.started_at, job.stopped_at
        if job.state.is_terminal:
            last.exit_code, last.status_reason = slurm.exit_code, job.status_reason
        last.host = slurm.nodes or None
        last.log_uri = str(self.run_dir(spec.name) / "logs")
        last.engine_resource = f"{slurm.job_id} on {slurm.nodes}" if slurm.nodes else slurm.job_id
        return job

    def _slurm_jobs(self, records: list[dict[str, Any]]) -> dict[str, SlurmJob]:
        """Slurm's view of these jobs, by job id: one squeue call, and one sacct call for the rest."""
        ids = {r["engine_id"] for r in records if r["engine_id"]}
        found = {j.job_id: j for j in commands.squeue_jobs() if j.job_id in ids}
        missing = sorted(ids - set(found))
        if missing:
            since = time.strftime(
                "%Y-%m-%dT%H:%M:%S",
                time.localtime(min(r["created_at"] for r in records if r["engine_id"] in missing) - 60),
            )
            found.update({j.job_id: j for j in commands.sacct_jobs(job_ids=missing, since=since)})
        return found

    def describe(self, name: str) -> Job:
        record = self._read_record(name)
        return self._job(record, self._slurm_jobs([record]).get(record["engine_id"]))

    def list(
        self,
        *,
        queue: str | None = None,
        states: Iterable[JobState] | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        records = [
            r
            for r in self._records()
            if (queue is None or r["spec"]["queue"] == queue)
            and (owner is None or r["spec"]["owner"] == owner)
        ]
        records.sort(key=lambda r: r["created_at"], reverse=True)
        slurm = self._slurm_jobs(records) if records else {}
        wanted = set(states) if states is not None else None
        jobs = []
        for record in records:
            job = self._job(record, slurm.get(record["engine_id"]))
            if wanted is None or job.state in wanted:
                jobs.append(job)
                if limit is not None and len(jobs) >= limit:
                    break
        return jobs

    def _log_files(self, name: str) -> list[tuple[str, Path]]:
        """(line prefix, file) of the job's logs: each attempt's node logs, then the batch log."""
        run_dir = self.run_dir(name)
        files = []
        for path in (run_dir / "logs").glob("attempt-*-*.log"):
            _, attempt, node = path.stem.split("-", 2)
            if attempt.isdigit():
                files.append(((int(attempt), node), path))
        ordered = [(f"{node}: ", path) for (_, node), path in sorted(files)]
        return [*ordered, ("batch: ", run_dir / BATCH_LOG)]

    def logs(self, name: str, *, from_head: bool = False, follow: bool = False) -> Iterator[str]:
        """Lines of the job's logs, each with the node it came from (`local: ...`; `batch: ` for the batch
        script's own lines): the last TAIL_LINES, or all with `from_head`; with `follow`, new lines as they
        come until the job has ended."""
        self._read_record(name)
        offsets: dict[Path, int] = {}

        def new_lines() -> list[str]:
            lines = []
            for prefix, path in self._log_files(name):
                try:
                    with open(path, "rb") as file:
                        file.seek(offsets.get(path, 0))
                        data = file.read()
                except FileNotFoundError:
                    continue
                complete = data[: data.rfind(b"\n") + 1]
                offsets[path] = offsets.get(path, 0) + len(complete)
                lines += [prefix + line for line in complete.decode(errors="replace").splitlines()]
            return lines

        first = new_lines()
        yield from first if from_head else first[-TAIL_LINES:]
        while follow:
            ended = self.describe(name).state.is_terminal
            yield from new_lines()
            if ended:
                return
            time.sleep(FOLLOW_POLL_S)

    # --- control -------------------------------------------------------------------------------------------

    def stop(self, name: str, *, reason: str) -> Job:
        """Stop the job, its `reason` recorded; an ended job stays as it ended. A running job's batch script
        gets SIGTERM (its trainer checkpoints, the end-of-job archive is written); a queued job, or one asked
        to stop before, is cancelled at once."""
        job = self.describe(name)
        if job.state.is_terminal:
            return job
        record = self._read_record(name)
        asked_before = record["stop_reason"] is not None
        if not asked_before:
            record["stop_reason"] = reason
            self._write_record(record)
        if record["engine_id"]:
            if job.state is JobState.RUNNING and not asked_before:
                commands.scancel(record["engine_id"], signal="TERM", batch=True)
            else:
                commands.scancel(record["engine_id"])
        return self.describe(name)

    def usage(self) -> list[QueueUsage]:
        """Nodes in use by running jobs and jobs waiting, per queue (its partition), against its capacity."""
        jobs = commands.squeue_jobs()
        result = []
        for queue in self.region.queues:
            partition = QueueSettings.model_validate(queue.settings).partition
            mine = [j for j in jobs if j.partition == partition]
            states = [job_state(j.state, j.reason)[0] for j in mine]
            running = sum(j.node_count for j, s in zip(mine, states, strict=True) if s is JobState.RUNNING)
            pending = sum(1 for s in states if s.is_queued)
            result.append(QueueUsage(queue.name, queue.instance_type, running, pending, queue.capacity))
        return result

    def queues(self) -> list[Queue]:
        return list(self.region.queues)

    def fair_share_figures(self, queue: Queue) -> list[dict[str, Any]]:
        """sshare's figures (shares, usage, fair-share factor) of the accounts, and users in them, that jobs
        of `queue` are charged to: its own account when the site names one, else every account."""
        account = queue.settings.get("account")
        return [dataclasses.asdict(s) for s in commands.shares() if account is None or s.account == account]
