"""AWS Batch service jobs of type SAGEMAKER_TRAINING: the SubmitServiceJob request, and what
DescribeServiceJob / ListServiceJobs report, read into lbm's states.

Batch starts the training job under a name of its own (`AWSBatch<TrainingJobName><attempt id>`, new on
each attempt); its ARN is `latestAttempt.serviceResourceId`, and it is never derived from the job name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lbm.errors import LbmError
from lbm.jobs.model import JobSpec, JobState
from lbm.jobs.sagemaker.service_model import check_request

SERVICE_JOB_TYPE = "SAGEMAKER_TRAINING"
TRAINING_JOB_ARN = "TrainingJobArn"
# SubmitServiceJob's documented limits (botocore's `batch` model does not carry them).
MAX_JOB_NAME = 128
JOB_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
MAX_SCHEDULING_PRIORITY = 9999
MAX_ATTEMPTS = 10
MIN_ATTEMPT_DURATION_S = 60
# Time an attempt gets past MaxRuntimeInSeconds: SageMaker stops the container (SIGTERM, 120 s), then
# uploads the checkpoints and output; Batch must not cut that short.
UPLOAD_MARGIN_S = 3600
_TRAINING_JOB_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:training-job/(.+)")


def submit_request(
    spec: JobSpec, payload: dict[str, Any], *, fair_share: bool, client_token: str
) -> dict[str, Any]:
    """The SubmitServiceJob request that queues the CreateTrainingJob `payload` on `spec.queue`.

    `shareIdentifier` and `schedulingPriority` go only to fair-share queues (Batch refuses a share
    identifier elsewhere); `client_token` makes a retried submit queue the job once.
    """
    if JOB_NAME_PATTERN.fullmatch(spec.name) is None:
        raise LbmError(
            f"job name {spec.name!r}: AWS Batch takes 1-{MAX_JOB_NAME} letters, digits, - and _, "
            "starting with a letter or digit"
        )
    attempts = spec.retries + 1
    if not 1 <= attempts <= MAX_ATTEMPTS:
        raise LbmError(f"--retries {spec.retries}: AWS Batch runs 1 to {MAX_ATTEMPTS} attempts; use 0 to 9")
    if not 0 <= spec.priority <= MAX_SCHEDULING_PRIORITY:
        raise LbmError(f"--priority {spec.priority}: AWS Batch takes 0 to {MAX_SCHEDULING_PRIORITY}")
    runtime = payload["StoppingCondition"]["MaxRuntimeInSeconds"]
    request: dict[str, Any] = {
        "jobName": spec.name,
        "jobQueue": spec.queue,
        "serviceJobType": SERVICE_JOB_TYPE,
        "serviceRequestPayload": json.dumps(payload, separators=(",", ":")),
        "retryStrategy": {"attempts": attempts},
        "timeoutConfig": {"attemptDurationSeconds": max(MIN_ATTEMPT_DURATION_S, runtime + UPLOAD_MARGIN_S)},
        "tags": {tag["Key"]: tag["Value"] for tag in payload["Tags"]},
        "clientToken": client_token,
    }
    if fair_share:
        request["shareIdentifier"] = spec.share_identifier
        request["schedulingPriority"] = spec.priority
    check_request("batch", "SubmitServiceJob", request)
    return request


@dataclass(frozen=True)
class ServiceJobAttempt:
    """One attempt: the training job Batch started for it, when, and why it ended."""

    training_job_arn: str | None
    started_at: float | None = None
    stopped_at: float | None = None
    status_reason: str | None = None


@dataclass(frozen=True)
class ServiceJob:
    """A service job as DescribeServiceJob (or a ListServiceJobs summary) gives it; Unix seconds."""

    job_id: str
    name: str
    state: JobState
    created_at: float | None
    queue: str | None = None
    status_reason: str | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    share_identifier: str | None = None
    scheduling_priority: int | None = None
    retries: int = 0
    training_job_arn: str | None = None
    attempts: tuple[ServiceJobAttempt, ...] = ()
    payload: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def training_job_name(self) -> str | None:
        """The name in the latest attempt's training job ARN (None before the first attempt starts)."""
        return training_job_name(self.training_job_arn) if self.training_job_arn else None


def training_job_name(arn: str) -> str:
    """The name part of a SageMaker training job ARN."""
    match = _TRAINING_JOB_ARN.fullmatch(arn)
    if match is None:
        raise ValueError(f"not a SageMaker training job ARN: {arn!r}")
    return match.group(1)


def read_service_job(response: dict[str, Any]) -> ServiceJob:
    """A DescribeServiceJob response or a ListServiceJobs summary as a ServiceJob."""
    if response.get("serviceJobType", SERVICE_JOB_TYPE) != SERVICE_JOB_TYPE:
        raise LbmError(f"Batch job {response['jobName']} is not a SageMaker training job")
    attempts = tuple(
        ServiceJobAttempt(
            training_job_arn=_resource_arn(attempt),
            started_at=_seconds(attempt.get("startedAt")),
            stopped_at=_seconds(attempt.get("stoppedAt")),
            status_reason=attempt.get("statusReason"),
        )
        for attempt in response.get("attempts", [])
    )
    payload = response.get("serviceRequestPayload")
    return ServiceJob(
        job_id=response["jobId"],
        name=response["jobName"],
        state=JobState(response["status"]),
        created_at=_seconds(response.get("createdAt")),
        queue=response.get("jobQueue"),
        status_reason=response.get("statusReason"),
        started_at=_seconds(response.get("startedAt")),
        stopped_at=_seconds(response.get("stoppedAt")),
        share_identifier=response.get("shareIdentifier"),
        scheduling_priority=response.get("schedulingPriority"),
        retries=response.get("retryStrategy", {}).get("attempts", 1) - 1,
        training_job_arn=_resource_arn(response.get("latestAttempt", {})),
        attempts=attempts,
        payload=json.loads(payload) if payload else None,
        tags=dict(response.get("tags", {})),
    )


def list_service_jobs(
    batch: Any, queue: str, *, name: str | None = None, created_after_s: float | None = None
) -> Iterator[ServiceJob]:
    """The service jobs on `queue` in every state, page by page: those called `name`,
    or those created after `created_after_s` (a filter makes Batch report every state, not only RUNNING)."""
    if name is not None:
        filters = [{"name": "JOB_NAME", "values": [name]}]
    else:
        filters = [{"name": "AFTER_CREATED_AT", "values": [str(int((created_after_s or 0) * 1000))]}]
    for page in batch.get_paginator("list_service_jobs").paginate(jobQueue=queue, filters=filters):
        for summary in page["jobSummaryList"]:
            yield read_service_job(summary)


def _resource_arn(attempt: dict[str, Any]) -> str | None:
    resource = attempt.get("serviceResourceId")
    if resource and resource.get("name") == TRAINING_JOB_ARN:
        return resource["value"]
    return None


def _seconds(milliseconds: int | None) -> float | None:
    return milliseconds / 1000.0 if milliseconds else None
