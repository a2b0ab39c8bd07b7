"""`lbm launch`, `sagey` and `batchy` as real processes on a SageMaker site: the Batch emulator and moto
(SageMaker, CloudWatch Logs, S3) stand in for AWS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from sagemaker_harness import AWS_CAPACITY, P5_QUEUE, REGION, WEST_QUEUE, site_yaml

import polling
from lbm.secrets import REDACTED

BIN = Path(sys.executable).parent
TINY = "train_diffusion_unet_keypoints_lang_tiny"
FAKE_WANDB_KEY = "wandb-fake-key-0123456789abcdef0123456789abcdef"
DEV_IMAGE = "jane-doe-sagemaker-dev"
LAUNCH = ("--config-file", TINY, "--instance-type", "p5", "--image-uri", DEV_IMAGE)
NAME = re.compile(r"^job:\s+(\S+)$", re.MULTILINE)


@pytest.fixture
def env(sagemaker_site, tmp_path):
    """The environment of user jane-doe (git email Jane.Doe@example.com, a W&B key) on the SageMaker site."""
    gitconfig = tmp_path / "gitconfig"
    subprocess.run(
        ["git", "config", "--file", str(gitconfig), "user.email", "Jane.Doe@example.com"], check=True
    )
    (tmp_path / "work").mkdir()
    return {
        **os.environ,
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "WANDB_API_KEY": FAKE_WANDB_KEY,
        "NETRC": str(tmp_path / "no-netrc"),
        "LBM_DATA_DIR": str(tmp_path / "data"),
    }


def run(env, *argv, timeout=180, **changes):
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        env={**env, **changes},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(env["LBM_CONFIG_DIR"]).parent / "work",
    )


def one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def bucket_keys(s3_bucket) -> list[str]:
    name = s3_bucket[0].removeprefix("s3://")
    return [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=name).get("Contents", [])]


def submitted(emulator) -> list[dict]:
    return [body for op, body in emulator.requests if op == "SubmitServiceJob"]


def test_launch_queues_a_service_job_and_stores_the_config(env, batch_emulator, s3_bucket):
    result = run(env, "lbm", "launch", *LAUNCH, "--instance-count", "2", "--max-days", "2", "--no-wait")
    assert result.returncode == 0, result.stderr
    name = NAME.search(result.stdout).group(1)
    assert name.startswith("jane-doe-lbm-training-")
    assert "wandbSecretId" in result.stdout  # the note: the key travels in the job's environment
    assert FAKE_WANDB_KEY not in result.stdout + result.stderr
    (request,) = submitted(batch_emulator)
    assert env["AWS_SECRET_ACCESS_KEY"] not in json.dumps(request)  # the training job runs as the site's role
    assert (request["jobName"], request["jobQueue"], request["shareIdentifier"]) == (
        name,
        P5_QUEUE,
        "jane-doe",
    )
    payload = json.loads(request["serviceRequestPayload"])
    artifact = f"{s3_bucket[0]}/sagemaker_outputs/jane-doe-lbm/{name}/"
    assert payload["CheckpointConfig"]["S3Uri"] == artifact
    assert payload["HyperParameters"]["config-uri"] == f"{artifact}config.yaml"
    assert payload["StoppingCondition"]["MaxRuntimeInSeconds"] == 2 * 86400
    assert {t["Key"]: t["Value"] for t in payload["Tags"]}["owner-email"] == "Jane.Doe@example.com"
    assert payload["AlgorithmSpecification"]["TrainingImage"].endswith(f".amazonaws.com/{DEV_IMAGE}")
    assert f"sagemaker_outputs/jane-doe-lbm/{name}/config.yaml" in bucket_keys(s3_bucket)


def test_launch_prints_each_state_until_running(env, batch_emulator):
    process = subprocess.Popen(
        [str(BIN / "lbm"), "launch", *LAUNCH],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(env["LBM_CONFIG_DIR"]).parent / "work",
    )
    try:
        polling.wait_for(lambda: submitted(batch_emulator), "the job to be submitted", timeout=120)
        name = submitted(batch_emulator)[0]["jobName"]
        for status in ("PENDING", "RUNNABLE", "SCHEDULED"):
            batch_emulator.advance(name, status)
            described = len([op for op, _ in batch_emulator.requests if op == "DescribeServiceJob"])
            polling.wait_for(
                lambda n=described: (
                    len([op for op, _ in batch_emulator.requests if op == "DescribeServiceJob"]) > n
                ),
                f"the launcher to see {status}",
            )
        batch_emulator.start(name)
        batch_emulator.run(name)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err
    seen = [state for state in ("SUBMITTED", "PENDING", "RUNNABLE", "SCHEDULED", "RUNNING") if state in out]
    assert seen == ["SUBMITTED", "PENDING", "RUNNABLE", "SCHEDULED", "RUNNING"], out


def test_dry_run_prints_the_request_and_calls_no_aws(env, batch_emulator, s3_bucket):
    result = run(env, "lbm", "launch", *LAUNCH, "--instance-count", "4", "--dry-run")
    assert result.returncode == 0, result.stderr
    request = json.loads("\n".join(line for line in result.stdout.splitlines() if not line.startswith("#")))
    assert request["serviceJobType"] == "SAGEMAKER_TRAINING" and request["jobQueue"] == P5_QUEUE
    payload = json.loads(request["serviceRequestPayload"])
    assert payload["Environment"]["WANDB_API_KEY"] == REDACTED
    assert payload["ResourceConfig"]["InstanceCount"] == 4  # the site's capacity; AWS's is 3
    assert FAKE_WANDB_KEY not in result.stdout + result.stderr
    assert batch_emulator.requests == [] and bucket_keys(s3_bucket) == []


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--max-days", "40"), ["--max-days 40 is above SageMaker's limit of 28 days"]),
        (
            ("--instance-count", str(AWS_CAPACITY[P5_QUEUE] + 1)),
            [f"above the capacity of queue {P5_QUEUE} (3"],
        ),
        (("--instance-count", "5", "--dry-run"), ["above the site's capacity of queue", "(4 instances)"]),
        (
            ("--instance-type", "ml.p4de.24xlarge"),
            ["unknown instance type 'ml.p4de.24xlarge' in region us-east-1"],
        ),
    ],
)
def test_bad_launches_are_one_line_and_send_nothing(env, batch_emulator, s3_bucket, args, fragments):
    argv = [*LAUNCH, *args] if "--instance-type" not in args else ["--config-file", TINY, *args]
    one_line_error(run(env, "lbm", "launch", *argv), *fragments)
    assert submitted(batch_emulator) == [] and bucket_keys(s3_bucket) == []


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        ("", "regions.us-east-1.sagemaker.account: is required"),
        ('sagemaker: {account: "123456789012"}', "regions.us-east-1.sagemaker.roleArn: is required"),
        (
            'sagemaker: {account: "123456789012", roleArn: "arn:aws:iam::1:role/x", keepAliveSeconds: 99999}',
            "regions.us-east-1.sagemaker.roleArn",
        ),
    ],
)
def test_a_region_without_good_settings_is_one_line(
    env, batch_emulator, s3_bucket, sagemaker_site, block, fragment
):
    sagemaker_site.write_text(site_yaml(s3_bucket[0], sagemaker_block=block))
    one_line_error(run(env, "lbm", "launch", *LAUNCH), f"site file {sagemaker_site}", fragment)
    assert batch_emulator.requests == [] and bucket_keys(s3_bucket) == []


def test_a_login_to_another_account_is_one_line(env, batch_emulator, s3_bucket, sagemaker_site):
    other = 'sagemaker: {account: "210987654321", roleArn: "arn:aws:iam::210987654321:role/lbm"}'
    sagemaker_site.write_text(site_yaml(s3_bucket[0], sagemaker_block=other))
    one_line_error(
        run(env, "lbm", "launch", *LAUNCH),
        "your AWS login (profile default) is for account 123456789012, but region us-east-1 runs in "
        "account 210987654321",
    )
    assert submitted(batch_emulator) == [] and bucket_keys(s3_bucket) == []


@pytest.fixture
def running_job(env, batch_emulator):
    """A job of jane-doe's that runs on two hosts and has logged a W&B link and a metrics line."""
    result = run(env, "lbm", "launch", *LAUNCH, "--instance-count", "2", "--no-wait")
    assert result.returncode == 0, result.stderr
    name = NAME.search(result.stdout).group(1)
    batch_emulator.start(name)
    batch_emulator.run(
        name,
        {
            1: [
                "wandb: View run at https://wandb.ai/tri/lbm/runs/abc123",
                "[metrics] step=1 epoch=0 train_loss=0.9",
            ],
            2: ["rank 8 ready"],
        },
    )
    return name


def test_sagey_watches_and_stops_the_job(env, batch_emulator, running_job):
    listed = json.loads(run(env, "sagey", "ls", "--json").stdout)
    assert [(j["name"], j["state"]) for j in listed] == [(running_job, "RUNNING")]
    described = run(env, "sagey", "describe", running_job, "--json")
    assert described.returncode == 0, described.stderr
    record = json.loads(described.stdout)
    assert record["state"] == "RUNNING" and "AWSBatch" in json.dumps(record)
    logs = run(env, "sagey", "logs", running_job, "--startfromhead", "--no-follow")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.splitlines() == [
        "[algo-1] wandb: View run at https://wandb.ai/tri/lbm/runs/abc123",
        "[algo-2] rank 8 ready",
        "[algo-1] [metrics] step=1 epoch=0 train_loss=0.9",
    ]
    usage = json.loads(run(env, "sagey", "usage", "--json").stdout)
    p5 = next(u for u in usage if u["instance_type"] == "ml.p5.48xlarge")
    assert (p5["running"], p5["pending"]) == (2, 0)
    stopped = run(env, "sagey", "stop", running_job)
    assert stopped.returncode == 0, stopped.stderr
    assert batch_emulator.job(running_job)["status"] == "FAILED"
    (termination,) = [body for op, body in batch_emulator.requests if op == "TerminateServiceJob"]
    assert termination["reason"] == "stopped by user"


def test_batchy_queues_jobs_and_metrics(env, batch_emulator, s3_bucket, running_job):
    queues = json.loads(run(env, "batchy", "list-queues", "--json").stdout)
    p5 = next(q for q in queues if q["name"] == P5_QUEUE)
    assert p5["nicknames"] == ["p5"] and p5["capacity"] == AWS_CAPACITY[P5_QUEUE]
    active = json.loads(run(env, "batchy", "ls", "p5", "--json").stdout)
    assert [j["name"] for j in active] == [running_job]
    bucket = s3_bucket[0].removeprefix("s3://")
    records = [{"step": s, "epoch": 0, "train_loss": 1.0 / s, "val_loss": 2.0 / s} for s in (1, 2, 3)]
    boto3.client("s3").put_object(
        Bucket=bucket,
        Key=f"sagemaker_outputs/jane-doe-lbm/{running_job}/metrics.jsonl",
        Body="".join(json.dumps(r) + "\n" for r in records).encode(),
    )
    metrics = run(env, "batchy", "model-metrics", "p5", running_job, "--json")
    assert metrics.returncode == 0, metrics.stderr
    summary = json.loads(metrics.stdout)
    assert summary["records"] == 3 and summary["final"]["train_loss"] == pytest.approx(1 / 3)
    assert "train:progress" in summary["final_metrics"]  # moto's FinalMetricDataList
    batch_emulator.finish(running_job)
    completed = json.loads(run(env, "batchy", "completed-jobs", "p5", "--json").stdout)
    assert [j["name"] for j in completed] == [running_job]
    one_line_error(run(env, "batchy", "cancel", "p5", running_job), "has already ended (SUCCEEDED)")


def test_batchy_cancels_a_queued_job(env, batch_emulator):
    result = run(env, "lbm", "launch", *LAUNCH, "--no-wait")
    name = NAME.search(result.stdout).group(1)
    batch_emulator.advance(name, "RUNNABLE")
    cancelled = run(env, "batchy", "cancel", "p5", name)
    assert cancelled.returncode == 0, cancelled.stderr
    assert batch_emulator.job(name)["status"] == "FAILED"


def test_region_and_profile_choose_where_requests_go(env, batch_emulator, tmp_path):
    assert run(env, "sagey", "ls", AWS_DEFAULT_REGION="us-west-2").returncode == 0
    assert batch_emulator.regions_seen == {"us-west-2"}
    listed = [body["jobQueue"] for op, body in batch_emulator.requests if op == "ListServiceJobs"]
    assert set(listed) == {WEST_QUEUE}
    assert run(env, "batchy", "ls", "p5", "--region", REGION).returncode == 0
    assert batch_emulator.regions_seen == {"us-west-2", REGION}
    config = tmp_path / "aws-config"
    config.write_text("[profile sagemaker]\nregion = us-east-1\n")
    one_line_error(
        run(env, "sagey", "ls", "--profile", "nobody", AWS_CONFIG_FILE=str(config)),
        "The config profile (nobody) could not be found",
    )


def test_expired_credentials_say_to_log_in_again(env, batch_emulator):
    batch_emulator.credentials_expired = True
    one_line_error(run(env, "sagey", "ls"), "expired", "log in again: aws sso login")


LIGHT = """
import contextlib, io, json, sys
from lbm.cli import batchy, sagey
HEAVY = ("torch", "torchvision", "transformers", "diffusers", "hydra", "omegaconf", "sagemaker")
with contextlib.redirect_stdout(io.StringIO()):
    codes = [sagey.main(["ls"]), sagey.main(["usage"])]
    codes += [batchy.main(["list-queues"]), batchy.main(["ls", "p5"])]
print(json.dumps({"codes": codes, "loaded": sorted(m for m in HEAVY if m in sys.modules)}))
"""


def test_listing_commands_import_no_torch_and_no_sagemaker_sdk(env, batch_emulator):
    result = subprocess.run(
        [sys.executable, "-c", LIGHT], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"codes": [0, 0, 0, 0], "loaded": []}
