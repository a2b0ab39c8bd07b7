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
