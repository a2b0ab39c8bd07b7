"""The SageMaker backend's test harness: a job spec and site settings, and a Stubber for AWS Batch that
checks every request against botocore's `batch` model, SubmitServiceJob's documented limits (which the
model lacks), and the payload against the `sagemaker` CreateTrainingJob model (none of which Stubber does).
"""

from __future__ import annotations

import json
import re
from typing import Any

from botocore.stub import Stubber

from lbm.jobs.model import JobSpec
from lbm.jobs.sagemaker.service_model import check_request
from lbm.jobs.sagemaker.settings import RegionSettings

ACCOUNT = "123456789012"
REGION = "us-east-1"
JOB_NAME = "jane-lbm-training-2026-12-01-11-00-00-000"
QUEUE = "fss-ml-p5-48xlarge-us-east-1"
ARTIFACT_URI = f"s3://robotics-manip-lbm/sagemaker_outputs/jane-lbm/{JOB_NAME}/"
SETTINGS = RegionSettings.model_validate(
    {
        "account": ACCOUNT,
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/lbm-sagemaker-training",
        "kmsKeyId": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "volumeSizeGb": 500,
        "keepAliveSeconds": 1800,
    }
)


def job_spec(**changes: Any) -> JobSpec:
    """A two-node p5 job of user jane, running her dev image for two days."""
    values: dict[str, Any] = {
        "name": JOB_NAME,
        "owner": "jane",
        "owner_email": "jane.doe@example.com",
        "queue": QUEUE,
        "command": ("lbm", "train", "--config-uri", f"{ARTIFACT_URI}config.yaml"),
        "artifact_uri": ARTIFACT_URI,
        "share_identifier": "jane",
        "instance_type": "ml.p5.48xlarge",
        "instance_count": 2,
        "nproc_per_node": 8,
        "max_runtime_s": 2 * 86400.0,
        "region": REGION,
        "image_uri": "jane-sagemaker-dev",
        "priority": 10,
        "retries": 2,
    }
    return JobSpec(**{**values, **changes})


# SubmitServiceJob and ListServiceJobs rules from the AWS Batch API reference, which botocore's model lacks.
_BATCH_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def check_documented_batch_rules(operation: str, params: dict[str, Any]) -> None:
    if operation == "SubmitServiceJob":
        assert _BATCH_JOB_NAME.fullmatch(params["jobName"]), params["jobName"]
        assert params["serviceJobType"] == "SAGEMAKER_TRAINING"
        assert 0 <= params.get("schedulingPriority", 0) <= 9999
        assert 1 <= params["retryStrategy"]["attempts"] <= 10
        payload = json.loads(params["serviceRequestPayload"])
        check_request("sagemaker", "CreateTrainingJob", payload)
        runtime = payload["StoppingCondition"]["MaxRuntimeInSeconds"]
        assert params["timeoutConfig"]["attemptDurationSeconds"] >= max(60, runtime)
        assert "shareIdentifier" in params or "schedulingPriority" not in params
    if operation == "ListServiceJobs" and "maxResults" in params:
        assert 1 <= params["maxResults"] <= 1000
    if operation == "TerminateServiceJob":
        assert params["reason"].strip()


class CheckedStubber(Stubber):
    """A Stubber whose client checks each request it makes against the model and the documented rules;
    `requests` holds (operation, params) in order."""

    def __init__(self, client: Any):
        super().__init__(client)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        service = client.meta.service_model.service_name
        client.meta.events.register(f"provide-client-params.{service}", self._check)

    def _check(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        check_request(model.service_model.service_name, model.name, params)
        check_documented_batch_rules(model.name, params)
        self.requests.append((model.name, json.loads(json.dumps(params))))


def batch_job_id(name: str) -> str:
    """A Batch job id (a UUID in AWS) stable for a name."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def training_job_arn(name: str, attempt: int) -> str:
    """The ARN of the training job Batch starts for `name` on attempt `attempt`, named as Batch names it."""
    return (
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/AWSBatch{name}{batch_job_id(name)[:8]}{attempt}"
    )


def describe_response(
    name: str,
    status: str,
    *,
    queue: str = QUEUE,
    attempts: int = 0,
    reason: str | None = None,
    payload: dict[str, Any] | None = None,
    created_ms: int = 1_764_586_800_000,
) -> dict[str, Any]:
    """DescribeServiceJob's answer for a job in `status` after `attempts` started attempts."""
    response: dict[str, Any] = {
        "jobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:service-job/{batch_job_id(name)}",
        "jobId": batch_job_id(name),
        "jobName": name,
        "jobQueue": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/{queue}",
        "serviceJobType": "SAGEMAKER_TRAINING",
        "status": status,
        "createdAt": created_ms,
        "startedAt": created_ms + 60_000 if status in ("RUNNING", "SUCCEEDED", "FAILED") else 0,
        "shareIdentifier": "jane",
        "schedulingPriority": 10,
        "retryStrategy": {"attempts": 3},
        "timeoutConfig": {"attemptDurationSeconds": 2 * 86400 + 3600},
        "isTerminated": status in ("SUCCEEDED", "FAILED"),
    }
    if payload is not None:
        response["serviceRequestPayload"] = json.dumps(payload)
    if attempts:
        response["attempts"] = [
            {
                "serviceResourceId": {"name": "TrainingJobArn", "value": training_job_arn(name, i + 1)},
                "startedAt": created_ms + 60_000 * (i + 1),
                **(
                    {"stoppedAt": created_ms + 60_000 * (i + 2), "statusReason": "AlgorithmError"}
                    if i + 1 < attempts
                    else {}
                ),
            }
            for i in range(attempts)
        ]
        response["latestAttempt"] = {
            "serviceResourceId": {"name": "TrainingJobArn", "value": training_job_arn(name, attempts)}
        }
    if reason is not None:
        response["statusReason"] = reason
    if status in ("SUCCEEDED", "FAILED"):
        response["stoppedAt"] = created_ms + 3_600_000
    return response


def summary_of(response: dict[str, Any]) -> dict[str, Any]:
    """The ListServiceJobs summary of a DescribeServiceJob answer."""
    keys = (
        "latestAttempt",
        "createdAt",
        "jobArn",
        "jobId",
        "jobName",
        "serviceJobType",
        "shareIdentifier",
        "status",
        "statusReason",
        "startedAt",
        "stoppedAt",
        "isTerminated",
    )
    return {k: response[k] for k in keys if k in response}


P5_QUEUE = QUEUE
TEAM_QUEUE = "mvdp-ml-p5-48xlarge-us-east-1"
P4D_QUEUE = "fss-ml-p4d-24xlarge-us-east-1"
WEST_QUEUE = "fss-ml-p5-48xlarge-us-west-2"
# What the site says of each queue's capacity, and what its service environment allows (AWS's word).
SITE_CAPACITY = {P5_QUEUE: 4, TEAM_QUEUE: 2, P4D_QUEUE: 4, WEST_QUEUE: 4}
AWS_CAPACITY = {P5_QUEUE: 3, TEAM_QUEUE: 2, P4D_QUEUE: 4, WEST_QUEUE: 4}


def site_yaml(bucket: str, *, sagemaker_block: str | None = None) -> str:
    """A two-region SageMaker site on `bucket` (the moto bucket); `sagemaker_block` replaces us-east-1's."""
    block = (
        sagemaker_block
        if sagemaker_block is not None
        else (f'sagemaker: {{account: "{ACCOUNT}", roleArn: "{SETTINGS.role_arn}", volumeSizeGb: 100}}')
    )
    return f"""\
defaultRegion: us-east-1
mainImage: lbm-sagemaker
instanceAliases: {{p5: ml.p5.48xlarge, p4d: ml.p4d.24xlarge}}
regions:
  us-east-1:
    backend: sagemaker
    bucket: {bucket}
    prefix: sagemaker_outputs
    {block}
    queues:
      - name: {P5_QUEUE}
        instanceType: ml.p5.48xlarge
        capacity: {SITE_CAPACITY[P5_QUEUE]}
        nicknames: [p5]
        fairShare: {{shareDecaySeconds: 3600, computeReservation: 10, weightFactors: {{main: 0.5}}}}
      - name: {TEAM_QUEUE}
        instanceType: ml.p5.48xlarge
        capacity: {SITE_CAPACITY[TEAM_QUEUE]}
        team: mvdp
      - name: {P4D_QUEUE}
        instanceType: ml.p4d.24xlarge
        capacity: {SITE_CAPACITY[P4D_QUEUE]}
        nicknames: [p4d]
        fairShare: {{shareDecaySeconds: 3600}}
  us-west-2:
    backend: sagemaker
    bucket: {bucket}
    prefix: sagemaker_outputs_west
    sagemaker: {{account: "{ACCOUNT}", roleArn: "{SETTINGS.role_arn}", wandbSecretId: lbm/wandb}}
    queues:
      - name: {WEST_QUEUE}
        instanceType: ml.p5.48xlarge
        capacity: {SITE_CAPACITY[WEST_QUEUE]}
        nicknames: [p5]
        fairShare: {{shareDecaySeconds: 3600}}
"""
