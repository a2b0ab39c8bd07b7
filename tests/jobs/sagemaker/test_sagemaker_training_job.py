"""The CreateTrainingJob payload: every rule of the issue's Submission list, checked against botocore's
`sagemaker` model, and accepted by moto's SageMaker."""

from __future__ import annotations

import copy
import re

import boto3
import pytest
from sagemaker_harness import ACCOUNT, ARTIFACT_URI, JOB_NAME, REGION, SETTINGS, job_spec

from lbm.errors import LbmError
from lbm.jobs.sagemaker.hyperparameters import restore_all, restore_value
from lbm.jobs.sagemaker.service_model import RequestInvalid, check_request
from lbm.jobs.sagemaker.training_job import MAX_RUNTIME_S, training_job_request
from lbm.train.metrics import format_line

CONFIG_URI = f"{ARTIFACT_URI}config.yaml"


def request(spec=None, settings=SETTINGS, environment=None):
    return training_job_request(
        spec or job_spec(),
        settings,
        config_uri=CONFIG_URI,
        environment=environment if environment is not None else {"LBM_JOB_NAME": JOB_NAME},
    )


def test_payload_follows_the_submission_rules():
    payload = request()
    assert payload["TrainingJobName"] == JOB_NAME
    assert payload["AlgorithmSpecification"]["TrainingImage"] == (
        f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/jane-sagemaker-dev"
    )
    assert payload["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert payload["RoleArn"] == SETTINGS.role_arn
    assert payload["OutputDataConfig"] == {
        "S3OutputPath": "s3://robotics-manip-lbm/sagemaker_outputs/jane-lbm/",
        "KmsKeyId": SETTINGS.kms_key_id,
    }
    assert payload["CheckpointConfig"] == {"S3Uri": ARTIFACT_URI, "LocalPath": "/opt/ml/checkpoints"}
    assert payload["ResourceConfig"] == {
        "InstanceType": "ml.p5.48xlarge",
        "InstanceCount": 2,
        "VolumeSizeInGB": 500,
        "KeepAlivePeriodInSeconds": 1800,
    }
    assert payload["StoppingCondition"] == {"MaxRuntimeInSeconds": 2 * 86400}
    assert restore_all(payload["HyperParameters"]) == {"config-uri": CONFIG_URI, "nproc-per-node": "8"}
    assert {t["Key"]: t["Value"] for t in payload["Tags"]} == {
        "owner": "jane",
        "owner-email": "jane.doe@example.com",
        "project": "lbm",
    }
    assert payload["Environment"] == {"LBM_JOB_NAME": JOB_NAME}


def test_a_full_image_uri_is_kept():
    full = "987654321098.dkr.ecr.us-west-2.amazonaws.com/lbm-sagemaker:2026-11-30"
    assert request(job_spec(image_uri=full))["AlgorithmSpecification"]["TrainingImage"] == full


def test_max_runtime_is_at_most_28_days():
    assert request(job_spec(max_runtime_s=28 * 86400.0))["StoppingCondition"]["MaxRuntimeInSeconds"] == (
        MAX_RUNTIME_S
    )
    assert request(job_spec(max_runtime_s=None))["StoppingCondition"]["MaxRuntimeInSeconds"] == MAX_RUNTIME_S
    assert request(job_spec(max_runtime_s=90.5))["StoppingCondition"]["MaxRuntimeInSeconds"] == 91
    with pytest.raises(LbmError, match=r"--max-days 40 is above SageMaker's limit of 28 days"):
        request(job_spec(max_runtime_s=40 * 86400.0))


def test_secret_id_travels_and_no_kms_key_means_none_sent():
    settings = SETTINGS.model_copy(update={"kms_key_id": None, "wandb_secret_id": "lbm/wandb-api-key"})
    payload = request(settings=settings)
    assert "KmsKeyId" not in payload["OutputDataConfig"]
    assert payload["HyperParameters"]["wandb-secret-id"] == "lbm/wandb-api-key"


def test_a_value_sagemaker_would_take_for_a_secret_travels_escaped():
    secret_id = "lbm/wandbApiKeyOfTheRoboticsTeam00000000"
    assert re.fullmatch(r"[A-Za-z0-9/+=]{40}", secret_id)  # SageMaker refuses such a value
    settings = SETTINGS.model_copy(update={"wandb_secret_id": secret_id})
    sent = request(settings=settings)["HyperParameters"]["wandb-secret-id"]
    assert re.fullmatch(r"[A-Za-z0-9/+=]{40}", sent) is None
    assert restore_value(sent) == secret_id


def test_metric_definitions_read_the_trainers_metrics_line():
    definitions = {
        d["Name"]: re.compile(d["Regex"]) for d in request()["AlgorithmSpecification"]["MetricDefinitions"]
    }
    assert set(definitions) == {"train_loss", "val_loss"}
    record = {
        "step": 120,
        "epoch": 3,
        "train_loss": 0.0412,
        "val_loss": 0.0535,
        "lr": 1e-4,
        "samples_per_s": 45.1,
    }
    line = format_line(record)
    for name, pattern in definitions.items():
        assert float(pattern.search(line).group(1)) == pytest.approx(record[name], rel=1e-5)
    no_val = format_line({"step": 5, "epoch": 0, "train_loss": 1.5})
    assert definitions["val_loss"].search(no_val) is None
    assert float(definitions["train_loss"].search(no_val).group(1)) == 1.5
    assert definitions["train_loss"].search("loss went down, train_loss=3 said someone") is None
    assert float(definitions["val_loss"].search(f"[rank0]:{line}").group(1)) == pytest.approx(0.0535)


@pytest.mark.parametrize(
    ("change", "member"),
    [
        (lambda p: p["ResourceConfig"].update(InstanceType="ml.p9.huge"), "ResourceConfig.InstanceType"),
        (lambda p: p["ResourceConfig"].update(KeepAlivePeriodInSeconds=21601), "KeepAlivePeriodInSeconds"),
        (lambda p: p.update(TrainingJobName="x" * 64), "TrainingJobName"),
        (lambda p: p.update(TrainingJobName="bad_name"), "TrainingJobName"),
        (lambda p: p.update(RoleArn="arn:aws:iam::12345:role/x"), "RoleArn"),
        (lambda p: p["HyperParameters"].update({f"k{i}": "v" for i in range(100)}), "HyperParameters"),
        (lambda p: p["HyperParameters"].update(long="v" * 2501), "HyperParameters.long"),
        (lambda p: p["Tags"].append({"Key": "team", "Value": "a#b"}), "Tags[3].Value"),
        (lambda p: p["Environment"].update({"1BAD": "x"}), "Environment key"),
        (lambda p: p["ResourceConfig"].update(InstanceCount="2"), "InstanceCount"),
        (lambda p: p["OutputDataConfig"].pop("S3OutputPath"), "S3OutputPath"),
        (lambda p: p["StoppingCondition"].update(MaxRuntimeInSeconds=0), "MaxRuntimeInSeconds"),
    ],
)
def test_the_service_model_refuses_what_sagemaker_would(change, member):
    payload = copy.deepcopy(request())
    check_request("sagemaker", "CreateTrainingJob", payload)
    change(payload)
    with pytest.raises(RequestInvalid, match=re.escape(member)) as refused:
        check_request("sagemaker", "CreateTrainingJob", payload)
    assert str(refused.value).startswith("CreateTrainingJob request: ")
    assert "\n" not in str(refused.value)


def test_a_payload_the_model_refuses_is_never_built():
    with pytest.raises(RequestInvalid, match="Environment"):
        request(environment={"LBM_NOTE": "x" * 513})
    with pytest.raises(RequestInvalid, match="InstanceType"):
        request(job_spec(instance_type="gpu-h100"))


def test_moto_sagemaker_accepts_the_payload(moto_endpoint):
    payload = request()
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_training_job(**payload)
    described = sagemaker.describe_training_job(TrainingJobName=JOB_NAME)
    assert described["ResourceConfig"]["InstanceCount"] == 2
    assert described["HyperParameters"] == payload["HyperParameters"]
    assert described["CheckpointConfig"] == payload["CheckpointConfig"]
