"""A real training job whose region's bucket is on S3 (a moto server process): the seed's artifact tree
fills while the job runs, and holds the output archive once it has ended."""

from __future__ import annotations

import io
import re
import tarfile

import boto3
import pytest
import yaml
from e2e_lab import USER, Lab, metric_steps, overrides, wait_for

from lbm.jobs.model import JobState

pytestmark = pytest.mark.slow


def test_a_job_fills_the_s3_artifact_tree_while_it_runs(lab: Lab, s3_bucket: tuple[str, dict]):
    url, _ = s3_bucket
    bucket = url.removeprefix("s3://")
    lab.use_bucket(url)
    s3 = boto3.client("s3", endpoint_url=lab.env["AWS_ENDPOINT_URL"])

    launched = lab.launch("--config-overrides", overrides(8), "--follow")
    name = launched.name()
    prefix = f"outputs/{USER}-lbm/{name}/"

    def keys() -> set[str]:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return {item["Key"].removeprefix(prefix) for item in listed.get("Contents", [])}

    def checkpoint_while_running() -> str | None:
        checkpoints = [key for key in keys() if key.endswith(".ckpt")]
        state = lab.job(name).state
        if checkpoints and state is JobState.RUNNING:
            return checkpoints[0]
        if state.is_terminal:
            pytest.fail(f"job {name} ended {state.value} before a checkpoint showed in S3 during the run")
        return None

    early = wait_for(checkpoint_while_running, "a checkpoint in S3 while the job runs")
    assert re.fullmatch(r"epoch_0-step_[48]\.ckpt", early)

    assert launched.wait() == 0, launched.output + launched.stderr()
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d SUCCEEDED$", launched.output, re.MULTILINE)
    assert f"artifacts: {url}/{prefix}" in launched.output
    assert lab.job(name).artifact_uri == f"{url}/{prefix}"
    tree = wait_for(lambda: "output/output.tar.gz" in (found := keys()) and found, "the output archive in S3")

    checkpoints = {key for key in tree if key.endswith(".ckpt")}
    assert "epoch_0-step_8.ckpt" in checkpoints
    assert {f"{key}.json" for key in checkpoints} <= tree
    assert {"config.yaml", "metrics.jsonl", "output/output.tar.gz"} <= tree

    def read(key: str) -> bytes:
        return s3.get_object(Bucket=bucket, Key=prefix + key)["Body"].read()

    steps = metric_steps(read("metrics.jsonl").decode())
    assert steps == [2, 4, 6, 8]
    assert yaml.safe_load(read("config.yaml"))["logging"]["name"] == name
    with tarfile.open(fileobj=io.BytesIO(read("output/output.tar.gz"))) as tar:
        members = {member.name: tar.extractfile(member).read().decode() for member in tar if member.isfile()}
    assert {"logs/attempt-0.log", "metrics.jsonl"} <= set(members)
    assert "[metrics] step=8 " in members["logs/attempt-0.log"]
    assert metric_steps(members["metrics.jsonl"]) == steps
