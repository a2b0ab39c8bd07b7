"""`SageMakerBackend`: jobs as AWS Batch service jobs (SAGEMAKER_TRAINING) on the region's queues, each
attempt a SageMaker training job whose log is in CloudWatch.

Nothing here imports boto3 until an AWS call is made, so reading a site costs no AWS start-up.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any

from lbm.errors import LbmError
from lbm.jobs.backend import JobNameTaken
from lbm.jobs.environment import job_environment
from lbm.jobs.model import Attempt, Job, JobSpec, JobState, Queue, QueueUsage
from lbm.jobs.region import Region
from lbm.jobs.registry import backend_info
from lbm.jobs.sagemaker import hyperparameters as hp
from lbm.jobs.sagemaker.aws import AwsClients
from lbm.jobs.sagemaker.logs import TrainingJobLogs
from lbm.jobs.sagemaker.service_job import (
    ServiceJob,
    list_service_jobs,
    read_service_job,
    submit_request,
    training_job_name,
)
from lbm.jobs.sagemaker.settings import RegionSettings
from lbm.jobs.sagemaker.training_job import (
    OUTPUT_DATA_DIR,
    TAG_OWNER,
    TAG_OWNER_EMAIL,
    max_runtime_seconds,
    training_job_request,
)
from lbm.secrets import AWS_CREDENTIAL_NAMES, REDACTED
from lbm.storage.layout import config_uri

# A SageMaker service environment counts its capacity in instances.
CAPACITY_UNIT = "NUM_INSTANCES"
WANDB_KEY = "WANDB_API_KEY"


class SageMakerBackend:
    """The Batch service job queues of one AWS region (the site region's name), per its `sagemaker` block."""

    RegionSettings = RegionSettings
    QueueSettings = None

    def __init__(self, region: Region):
        self.region = region
        self.settings = RegionSettings.model_validate(region.settings)
        self._aws: AwsClients | None = None
        self._ids: dict[str, str] = {}  # job name -> Batch job id
        self.poll_interval_s = backend_info(region.backend).poll_interval_s

    @property
    def aws(self) -> AwsClients:
        if self._aws is None:
            self._aws = AwsClients(self.region.name)
        return self._aws

    def _batch(self) -> Any:
        return self.aws.client("batch")

    # --- queueing ------------------------------------------------------------------------------------------

    def check(self, spec: JobSpec) -> list[str]:
        """The site's rules, the request against the service models, the AWS login's account against the
        site's, and the instance count against the capacity of the queue's service environments."""
        notes = self._check_site(spec)
        with self.aws.errors():
            account = self.aws.client("sts").get_caller_identity()["Account"]
        if account != self.settings.account:
            raise LbmError(
                f"your AWS login (profile {self.aws.session.profile_name}) is for account {account}, but "
                f"region {self.region.name} runs in account {self.settings.account}; log in to that "
                "account or pass another --profile"
            )
        capacity = self._capacities(self._queue_details([spec.queue]))[spec.queue]
        if capacity is not None and spec.instance_count > capacity:
            raise LbmError(
                f"--instance-count {spec.instance_count} is above the capacity of queue {spec.queue} "
                f"({capacity} instances in its service environment); use --instance-count {capacity} or less"
            )
        return notes

    def dry_run(self, spec: JobSpec) -> dict[str, Any]:
        """The SubmitServiceJob request, checked against the site's capacity; no AWS call."""
        self._check_site(spec)
        capacity = self.region.queue(spec.queue).capacity
        if spec.instance_count > capacity:
            raise LbmError(
                f"--instance-count {spec.instance_count} is above the site's capacity of queue {spec.queue} "
                f"({capacity} instances); use --instance-count {capacity} or less"
            )
        secrets = {} if self.settings.wandb_secret_id else {WANDB_KEY: REDACTED}
        return self._request(spec, secrets)

    def submit(self, spec: JobSpec, secrets: Mapping[str, str]) -> Job:
        self.check(spec)
        if self._find(spec.name, [spec.queue]) is not None:
            raise JobNameTaken(f"job name {spec.name} is taken in queue {spec.queue}")
        request = self._request(spec, secrets)
        with self.aws.errors():
            answer = self._batch().submit_service_job(**request)
        self._ids[spec.name] = answer["jobId"]
        return Job(spec=spec, state=JobState.SUBMITTED, created_at=time.time(), engine_id=answer["jobId"])

    def _check_site(self, spec: JobSpec) -> list[str]:
        """What the site and the service models say of `spec` (LbmError), and notes for the user."""
        queue = self.region.queue(spec.queue)
        if spec.instance_type not in self.region.instance_types():
            raise LbmError(
                f"instance type {spec.instance_type} is not served by a queue of region {self.region.name}; "
                f"choose: {', '.join(self.region.instance_types())}"
            )
        if queue.instance_type != spec.instance_type:
            raise LbmError(f"queue {queue.name} runs {queue.instance_type}, not {spec.instance_type}")
        max_runtime_seconds(spec)
        self._request(spec, {})
        notes = []
        if not self.settings.wandb_secret_id:
            notes.append(
                f"region {self.region.name} names no sagemaker.wandbSecretId: your W&B key travels in the "
                "training job's environment (DescribeTrainingJob shows it to your account)"
            )
        if spec.max_runtime_s is None:
            notes.append("no --max-days: the job may run up to 28 days, SageMaker's limit")
        return notes

    def _request(self, spec: JobSpec, secrets: Mapping[str, str]) -> dict[str, Any]:
        """The SubmitServiceJob request. The training job runs as the site's role: the submitter's AWS
        credentials stay out of it, and the W&B key too when the site names its secret."""
        environment = job_environment(spec, attempt=0, output_dir=OUTPUT_DATA_DIR)
        # Every attempt's container gets this request's LBM_ATTEMPT=0: the entry point counts the attempts.
        left_out = {*AWS_CREDENTIAL_NAMES, *([WANDB_KEY] if self.settings.wandb_secret_id else [])}
        environment.update({name: value for name, value in secrets.items() if name not in left_out})
        payload = training_job_request(
            spec,
            self.settings,
            config_uri=config_uri(spec.artifact_uri),
            environment=environment,
        )
        queue = self.region.queue(spec.queue)
        token = hashlib.sha256(f"{self.region.name}/{queue.name}/{spec.name}".encode()).hexdigest()
        return submit_request(spec, payload, fair_share=queue.fair_share, client_token=token[:64])

    # --- watching ------------------------------------------------------------------------------------------

    def _find(self, name: str, queues: Iterable[str]) -> ServiceJob | None:
        with self.aws.errors():
            for queue in queues:
                for job in list_service_jobs(self._batch(), queue, name=name):
                    self._ids[name] = job.job_id
                    return job
        return None

    def _service_job(self, name: str) -> ServiceJob:
        job_id = self._ids.get(name)
        if job_id is None:
            found = self._find(name, [q.name for q in self.region.queues])
            if found is None:
                raise LbmError(f"unknown job {name!r} in region {self.region.name}")
            job_id = found.job_id
        with self.aws.errors():
            return read_service_job(self._batch().describe_service_job(jobId=job_id))

    def describe(self, name: str) -> Job:
        """The job; a failed one's status reason carries SageMaker's FailureReason of its last attempt."""
        found = self._service_job(name)
        job = self._job(found)
        if found.state is JobState.FAILED and found.training_job_arn is not None:
            with self.aws.errors():
                failure = self._training_job(found.training_job_arn).get("FailureReason")
            if failure and failure not in (job.status_reason or ""):
                job.status_reason = (
                    f"{job.status_reason}; SageMaker: {failure}" if job.status_reason else failure
                )
        return job

    def list(
        self,
        *,
        queue: str | None = None,
        states: Iterable[JobState] | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        wanted = set(states) if states is not None else None
        queues = [self.region.queue(queue).name] if queue else [q.name for q in self.region.queues]
        jobs = []
        with self.aws.errors():
            for name in queues:
                for found in list_service_jobs(self._batch(), name):
                    self._ids[found.name] = found.job_id
                    job = self._job(found, queue=name)
                    if (wanted is None or job.state in wanted) and (owner is None or job.owner == owner):
                        jobs.append(job)
        jobs.sort(key=lambda job: job.created_at, reverse=True)
        return jobs if limit is None else jobs[:limit]

    def logs(self, name: str, *, from_head: bool = False, follow: bool = False) -> Iterator[str]:
        """Every host's CloudWatch lines of the job's latest training job; with `follow`, from when
        SageMaker starts it until the job ends, going on to the next attempt's training job (all of it)
        when Batch retries."""
        job = self._service_job(name)
        while True:
            while job.training_job_arn is None:
                if not follow or job.state.is_terminal:
                    raise LbmError(
                        f"job {name} is {job.state.value}: it has no log until its training job starts"
                    )
                time.sleep(self.poll_interval_s)
                job = self._service_job(name)
            followed = job.training_job_arn
            job = yield from self._attempt_log(name, job, from_head=from_head, follow=follow)
            if not follow or job.training_job_arn == followed:
                return
            yield f"[lbm] attempt {len(job.attempts)}: training job {job.training_job_name}"
            from_head = True

    def _attempt_log(
        self, name: str, job: ServiceJob, *, from_head: bool, follow: bool
    ) -> Generator[str, None, ServiceJob]:
        """The lines of the training job of `job`'s latest attempt, followed while the job runs that
        attempt; returns the job as last seen."""
        arn = job.training_job_arn
        seen = [job]

        def same_attempt_running() -> bool:
            seen.append(self._service_job(name))
            return not seen[-1].state.is_terminal and seen[-1].training_job_arn == arn

        with self.aws.errors():
            reader = TrainingJobLogs(self.aws.client("logs"), self._training_job(arn)["TrainingJobName"])
            yield from reader.lines(
                from_head=from_head,
                follow=follow,
                still_running=same_attempt_running,
                poll_interval_s=self.poll_interval_s,
            )
        return seen[-1]

    def _training_job(self, arn: str) -> dict[str, Any]:
        """DescribeTrainingJob of the training job in `arn` (its name as SageMaker spells it, its metrics)."""
        return self.aws.client("sagemaker").describe_training_job(TrainingJobName=training_job_name(arn))

    def final_metrics(self, name: str) -> dict[str, float]:
        """SageMaker's FinalMetricDataList of the job's latest training job (empty before it starts)."""
        job = self._service_job(name)
        if job.training_job_arn is None:
            return {}
        with self.aws.errors():
            described = self._training_job(job.training_job_arn)
        return {m["MetricName"]: m["Value"] for m in described.get("FinalMetricDataList", [])}

    def stop(self, name: str, *, reason: str) -> Job:
        """TerminateServiceJob: Batch cancels a queued job; SageMaker stops a running one (SIGTERM, then
        120 s for the entry point to checkpoint)."""
        job = self._service_job(name)
        if not job.state.is_terminal:
            with self.aws.errors():
                self._batch().terminate_service_job(jobId=job.job_id, reason=reason)
        return self.describe(name)

    def usage(self) -> list[QueueUsage]:
        """Instances in use (GetJobQueueSnapshot) and jobs at the front of each queue, against capacity."""
        capacities = self._capacities(self._queue_details([q.name for q in self.region.queues]))
        usage = []
        with self.aws.errors():
            for queue in self.region.queues:
                snapshot = self._batch().get_job_queue_snapshot(jobQueue=queue.name)
                in_use = snapshot.get("queueUtilization", {}).get("totalCapacityUsage", [])
                capacity = capacities[queue.name]
                usage.append(
                    QueueUsage(
                        queue=queue.name,
                        instance_type=queue.instance_type,
                        running=int(sum(u["quantity"] for u in in_use if u["capacityUnit"] == CAPACITY_UNIT)),
                        pending=len(snapshot.get("frontOfQueue", {}).get("jobs", [])),
                        capacity=queue.capacity if capacity is None else capacity,
                    )
                )
        return usage

    def queues(self) -> list[Queue]:
        """The region's SAGEMAKER_TRAINING queues as AWS has them, with the site's instance type and team;
        capacity from their service environments."""
        site = {q.name: q for q in self.region.queues}
        with self.aws.errors():
            found = [
                q
                for page in self._batch().get_paginator("describe_job_queues").paginate()
                for q in page["jobQueues"]
                if q.get("jobQueueType") == "SAGEMAKER_TRAINING"
            ]
        capacities = self._capacities(found)
        queues = []
        for detail in found:
            name = detail["jobQueueName"]
            known = site.get(name, Queue(name=name, instance_type="(not in the site)", capacity=0))
            capacity = capacities[name]
            queues.append(
                Queue(
                    name=name,
                    instance_type=known.instance_type,
                    capacity=known.capacity if capacity is None else capacity,
                    team=known.team,
                    share_decay_seconds=known.share_decay_seconds,
                    compute_reservation=known.compute_reservation,
                    weight_factors=known.weight_factors,
                    fair_share="schedulingPolicyArn" in detail,
                )
            )
        return queues

    def _queue_details(self, names: list[str]) -> list[dict[str, Any]]:
        """DescribeJobQueues of the named queues; LbmError naming one AWS does not have."""
        with self.aws.errors():
            details = self._batch().describe_job_queues(jobQueues=names)["jobQueues"]
        missing = sorted(set(names) - {d["jobQueueName"] for d in details})
        if missing:
            raise LbmError(
                f"AWS Batch in {self.region.name} has no job queue {missing[0]}; see batchy list-queues"
            )
        return details

    def _capacities(self, details: list[dict[str, Any]]) -> dict[str, int | None]:
        """The instances each queue's service environments allow (their capacityLimits); None when AWS
        gives no limit in instances."""
        environments = sorted(
            {e["serviceEnvironment"] for d in details for e in d.get("serviceEnvironmentOrder", [])}
        )
        limits: dict[str, int] = {}
        if environments:
            with self.aws.errors():
                described = self._batch().describe_service_environments(serviceEnvironments=environments)
            for env in described["serviceEnvironments"]:
                counts = [
                    c["maxCapacity"] for c in env["capacityLimits"] if c.get("capacityUnit") == CAPACITY_UNIT
                ]
                if counts:
                    limits[env["serviceEnvironmentName"]] = limits[env["serviceEnvironmentArn"]] = sum(counts)
        capacities: dict[str, int | None] = {}
        for detail in details:
            known = [
                limits[e["serviceEnvironment"]]
                for e in detail.get("serviceEnvironmentOrder", [])
                if e["serviceEnvironment"] in limits
            ]
            capacities[detail["jobQueueName"]] = sum(known) if known else None
        return capacities

    # --- reading Batch's answers ---------------------------------------------------------------------------

    def _job(self, found: ServiceJob, queue: str | None = None) -> Job:
        attempts = [
            Attempt(
                index=index,
                started_at=attempt.started_at,
                stopped_at=attempt.stopped_at,
                status_reason=attempt.status_reason,
                engine_resource=attempt.training_job_arn,
            )
            for index, attempt in enumerate(found.attempts, start=1)
        ]
        return Job(
            spec=self._spec(found, queue or _queue_name(found.queue or "")),
            state=found.state,
            created_at=found.created_at or 0.0,
            status_reason=found.status_reason,
            started_at=found.started_at,
            stopped_at=found.stopped_at,
            attempts=attempts,
            engine_id=found.job_id,
        )

    def _spec(self, found: ServiceJob, queue: str) -> JobSpec:
        """The JobSpec as far as Batch tells it: all of it from a described job's payload, the name, queue,
        owner and share from a listed one."""
        payload = found.payload or {}
        tags = {t["Key"]: t["Value"] for t in payload.get("Tags", [])} or found.tags
        values = hp.restore_all(payload.get("HyperParameters", {}))
        resources = payload.get("ResourceConfig", {})
        site_queue = next((q for q in self.region.queues if q.name == queue), None)
        nproc = int(values.get(hp.NPROC_PER_NODE, "1"))
        command = ("lbm", "train", "--config-uri", values.get(hp.CONFIG_URI, ""))
        runtime = payload.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
        return JobSpec(
            name=found.name,
            owner=tags.get(TAG_OWNER) or _owner_of(found.name, found.share_identifier),
            queue=queue,
            command=command + (("--nproc-per-node", str(nproc)) if nproc > 1 else ()),
            artifact_uri=payload.get("CheckpointConfig", {}).get("S3Uri", ""),
            share_identifier=found.share_identifier or "",
            priority=found.scheduling_priority or 0,
            instance_type=resources.get("InstanceType", site_queue.instance_type if site_queue else ""),
            instance_count=resources.get("InstanceCount", 1),
            nproc_per_node=nproc,
            max_runtime_s=float(runtime) if runtime else None,
            retries=found.retries,
            region=self.region.name,
            image_uri=payload.get("AlgorithmSpecification", {}).get("TrainingImage"),
            team=site_queue.team if site_queue else None,
            owner_email=tags.get(TAG_OWNER_EMAIL) or None,
        )


def _queue_name(queue: str) -> str:
    """A queue's name from its ARN (`arn:aws:batch:...:job-queue/<name>`) or name."""
    return queue.rsplit("/", 1)[-1]


def _owner_of(name: str, share_identifier: str | None) -> str:
    """A listed job's owner, from its name (`<owner>-lbm-training-...`, `<owner>-<task>-training-...`)."""
    stem = name.rsplit("-training-", 1)[0]
    if stem.endswith("-lbm"):
        return stem[: -len("-lbm")]
    if share_identifier and stem.startswith(f"{share_identifier}-"):
        return share_identifier
    return stem.split("-", 1)[0]
