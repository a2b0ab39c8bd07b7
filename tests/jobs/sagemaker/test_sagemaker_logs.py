"""A training job's CloudWatch log read from moto: every host interleaved by time with its prefix, the tail
or from the head, and following while the job runs."""

from __future__ import annotations

import contextlib
import time

import boto3
import pytest
from sagemaker_harness import REGION

from lbm.jobs.sagemaker.logs import LOG_GROUP, TrainingJobLogs, host_of

JOB = "AWSBatchjane-lbm-training-2026-12-01-11-00-00-000a1b2c3d41"
# CloudWatch takes events of the last 14 days only.
T0 = int(time.time() * 1000) - 3_600_000


@pytest.fixture
def logs(moto_endpoint):
    client = boto3.client("logs", region_name=REGION)
    with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
        client.create_log_group(logGroupName=LOG_GROUP)
    return client


def write(client, stream, events):
    with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
        client.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    answer = client.put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": T0 + t, "message": m} for t, m in events],
    )
    assert "rejectedLogEventsInfo" not in answer


def unique_job(request) -> str:
    return f"{JOB}{abs(hash(request.node.name)) % 10_000}"


def test_hosts_interleave_by_time_with_their_prefix(logs, request):
    job = unique_job(request)
    write(logs, f"{job}/algo-1-1764586800", [(0, "rank 0 up"), (20, "[metrics] step=1 train_loss=1.5\n")])
    write(
        logs, f"{job}/algo-2-1764586800", [(10, "rank 8 up"), (30, "wandb: https://wandb.ai/tri/lbm/runs/x")]
    )
    write(logs, f"{job}0/algo-1-1764586800", [(5, "another job's line")])
    lines = list(TrainingJobLogs(logs, job).lines(from_head=True))
    assert lines == [
        "[algo-1] rank 0 up",
        "[algo-2] rank 8 up",
        "[algo-1] [metrics] step=1 train_loss=1.5",
        "[algo-2] wandb: https://wandb.ai/tri/lbm/runs/x",
    ]


def test_the_tail_is_the_last_lines_of_all_hosts(logs, request):
    job = unique_job(request)
    write(logs, f"{job}/algo-1-1", [(2 * i, f"one {i}") for i in range(50)])
    write(logs, f"{job}/algo-2-1", [(2 * i + 1, f"two {i}") for i in range(50)])
    lines = list(TrainingJobLogs(logs, job).lines(tail=5))
    assert lines == [
        "[algo-2] two 47",
        "[algo-1] one 48",
        "[algo-2] two 48",
        "[algo-1] one 49",
        "[algo-2] two 49",
    ]
    everything = list(TrainingJobLogs(logs, job).lines(from_head=True))
    assert len(everything) == 100 and everything[-5:] == lines


def test_following_prints_what_comes_until_the_job_ends(logs, request):
    job = unique_job(request)
    write(logs, f"{job}/algo-1-1", [(0, "starting")])
    later = [
        lambda: write(logs, f"{job}/algo-1-1", [(10, "epoch 0")]),
        lambda: write(logs, f"{job}/algo-2-1", [(15, "second host joins"), (25, "epoch 0 on 2")]),
        lambda: write(logs, f"{job}/algo-1-1", [(30, "finished")]),
    ]
    checks = iter([True, True, True, False])
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        later.pop(0)()

    lines = TrainingJobLogs(logs, job).lines(
        follow=True, still_running=lambda: next(checks), poll_interval_s=7.0, sleep=sleep
    )
    assert list(lines) == [
        "[algo-1] starting",
        "[algo-1] epoch 0",
        "[algo-2] second host joins",
        "[algo-2] epoch 0 on 2",
        "[algo-1] finished",
    ]
    assert sleeps == [7.0, 7.0, 7.0]


def test_a_job_without_streams_yet_has_no_lines(logs, request):
    assert list(TrainingJobLogs(logs, unique_job(request)).lines(from_head=True)) == []


def test_host_of_stream_names():
    assert host_of(f"{JOB}/algo-12-1764586800") == "algo-12"
    assert host_of(f"{JOB}/algo-1") == "algo-1"
