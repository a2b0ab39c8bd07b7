"""The CreateTrainingJob request for one job: the payload AWS Batch hands to SageMaker unchecked.

It is checked here against botocore's `sagemaker` model, because a bad one would fail only once Batch
starts it. The resolved config travels as a file in S3 (its URI is a hyperparameter), so long override
lists never meet the hyperparameter limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lbm.errors import LbmError
from lbm.jobs.model import JobSpec
from lbm.jobs.sagemaker import hyperparameters as hp
from lbm.jobs.sagemaker.service_model import check_request
from lbm.jobs.sagemaker.settings import RegionSettings

MAX_RUNTIME_S = 28 * 86400  # SageMaker's limit for MaxRuntimeInSeconds
CHECKPOINT_DIR = "/opt/ml/checkpoints"
OUTPUT_DATA_DIR = "/opt/ml/output/data"  # packed by SageMaker into output/output.tar.gz
INPUT_MODE = "File"
# The trainer's stdout line is `[metrics] step=.. epoch=.. train_loss=.. val_loss=..` (lbm.train.metrics).
METRIC_NAMES = ("train_loss", "val_loss")
TAG_OWNER = "owner"
TAG_OWNER_EMAIL = "owner-email"
TAG_PROJECT = "project"


def metric_definitions() -> list[dict[str, str]]:
    """SageMaker metric definitions that read train_loss and val_loss from the trainer's `[metrics]` lines
    (wherever the line starts: torchrun may put a rank in front)."""
    return [{"Name": name, "Regex": rf"\[metrics\] .*\b{name}=(\S+)"} for name in METRIC_NAMES]


def max_runtime_seconds(spec: JobSpec) -> int:
    """MaxRuntimeInSeconds for the job's --max-days (28 days, SageMaker's limit, when none is given)."""
    if spec.max_runtime_s is None:
        return MAX_RUNTIME_S
    if spec.max_runtime_s > MAX_RUNTIME_S:
        raise LbmError(
            f"--max-days {spec.max_runtime_s / 86400:g} is above SageMaker's limit of "
            f"{MAX_RUNTIME_S // 86400} days; use --max-days 28 or less"
        )
    return max(1, math.ceil(spec.max_runtime_s))


def image_uri(image: str, settings: RegionSettings, region: str) -> str:
    """A full image URI (`<registry host>/<repo>[:tag]`) as given, else that repository in the ECR."""
    host = image.split("/", 1)[0]
    if "/" in image and ("." in host or ":" in host):
        return image
    return f"{settings.account}.dkr.ecr.{region}.amazonaws.com/{image}"


def owner_prefix(artifact_uri: str) -> str:
    """The owner's folder of the artifact tree (`s3://bucket/prefix/<owner>-lbm/`) above the job's own."""
    return artifact_uri.rstrip("/").rsplit("/", 1)[0] + "/"


def training_job_request(
    spec: JobSpec,
    settings: RegionSettings,
    *,
    config_uri: str,
    environment: Mapping[str, str],
) -> dict[str, Any]:
    """The CreateTrainingJob request for `spec`, checked against the service's model (RequestInvalid)."""
    if not spec.image_uri:
        raise LbmError(f"region {spec.region} has no mainImage; pass --image-uri")
    if not spec.artifact_uri.startswith("s3://"):
        raise LbmError(f"SageMaker writes only to S3; the region's bucket gives {spec.artifact_uri}")
    hyperparameters = {hp.CONFIG_URI: config_uri, hp.NPROC_PER_NODE: str(spec.nproc_per_node)}
    if settings.wandb_secret_id:
        hyperparameters[hp.WANDB_SECRET_ID] = settings.wandb_secret_id
    output: dict[str, Any] = {"S3OutputPath": owner_prefix(spec.artifact_uri)}
    resources: dict[str, Any] = {
        "InstanceType": spec.instance_type,
        "InstanceCount": spec.instance_count,
        "VolumeSizeInGB": settings.volume_size_gb,
        "KeepAlivePeriodInSeconds": settings.keep_alive_seconds,
    }
    if settings.kms_key_id:
        # The output only: the p4d/p5 volumes are local NVMe, which takes no VolumeKmsKeyId.
        output["KmsKeyId"] = settings.kms_key_id
    request = {
        "TrainingJobName": spec.name,
        "AlgorithmSpecification": {
            "TrainingImage": image_uri(spec.image_uri, settings, spec.region),
            "TrainingInputMode": INPUT_MODE,
            "MetricDefinitions": metric_definitions(),
        },
        "RoleArn": settings.role_arn,
        "HyperParameters": {name: hp.escape_value(value) for name, value in hyperparameters.items()},
        "OutputDataConfig": output,
        "CheckpointConfig": {"S3Uri": spec.artifact_uri, "LocalPath": CHECKPOINT_DIR},
        "ResourceConfig": resources,
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_seconds(spec)},
        "Environment": dict(environment),
        "Tags": [
            {"Key": TAG_OWNER, "Value": spec.owner},
            {"Key": TAG_OWNER_EMAIL, "Value": spec.owner_email or ""},
            {"Key": TAG_PROJECT, "Value": settings.project},
        ],
    }
    check_request("sagemaker", "CreateTrainingJob", request)
    return request
