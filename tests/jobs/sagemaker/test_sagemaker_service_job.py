"""SubmitServiceJob requests and what DescribeServiceJob / ListServiceJobs report, through a Stubber whose
every request is checked against botocore's `batch` model and the documented limits."""

from __future__ import annotations

import json

import pytest
from sagemaker_harness import (
    ARTIFACT_URI,
    JOB_NAME,
    QUEUE,
    SETTINGS,
    batch_job_id,
    describe_response,
    job_spec,
    summary_of,
    training_job_arn,
)

from lbm.errors import LbmError
from lbm.jobs.model import JobState
from lbm.jobs.sagemaker.service_job import (
    UPLOAD_MARGIN_S,
    list_service_jobs,
    read_service_job,
    submit_request,
    training_job_name,
)
from lbm.jobs.sagemaker.service_model import RequestInvalid
from lbm.jobs.sagemaker.training_job import training_job_request

SEQUENCE = ("SUBMITTED", "PENDING", "RUNNABLE", "SCHEDULED", "STARTING", "RUNNING", "SUCCEEDED")


def payload(spec=None):
    return training_job_request(
        spec or job_spec(),
        SETTINGS,
        config_uri=f"{ARTIFACT_URI}config.yaml",
        environment={},
    )


def test_submit_request_for_a_fair_share_queue(batch):
    spec = job_spec()
    request = submit_request(spec, payload(spec), fair_share=True, client_token="token-1")
    assert request["serviceJobType"] == "SAGEMAKER_TRAINING"
    assert json.loads(request["serviceRequestPayload"]) == payload(spec)
    assert request["shareIdentifier"] == "jane"
    assert request["schedulingPriority"] == 10
    assert request["retryStrategy"] == {"attempts": 3}
    assert request["timeoutConfig"]["attemptDurationSeconds"] == 2 * 86400 + UPLOAD_MARGIN_S
    assert request["clientToken"] == "token-1"
    assert request["tags"] == {"owner": "jane", "owner-email": "jane.doe@example.com", "project": "lbm"}
    answer = {
        "jobArn": f"arn:aws:batch:us-east-1:123456789012:service-job/{batch_job_id(JOB_NAME)}",
        "jobName": JOB_NAME,
        "jobId": batch_job_id(JOB_NAME),
    }
    batch.add_response("submit_service_job", answer, expected_params=request)
    assert batch.client.submit_service_job(**request)["jobId"] == batch_job_id(JOB_NAME)
    assert [op for op, _ in batch.requests] == ["SubmitServiceJob"]


def test_a_queue_without_fair_share_gets_no_share_identifier():
    spec = job_spec(queue="mvdp-ml-p5-48xlarge-us-east-1", team="mvdp", share_identifier="mvdp")
    request = submit_request(spec, payload(spec), fair_share=False, client_token="t")
    assert "shareIdentifier" not in request and "schedulingPriority" not in request


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"priority": 10000}, "--priority 10000: AWS Batch takes 0 to 9999"),
        ({"priority": -1}, "--priority -1"),
        ({"retries": 10}, "--retries 10: AWS Batch runs 1 to 10 attempts"),
        ({"name": "-starts-with-a-dash"}, "job name '-starts-with-a-dash'"),
    ],
)
def test_submit_request_refuses_what_batch_would(change, message):
    spec = job_spec(**change)
    with pytest.raises(LbmError, match=message.replace("(", r"\(")):
        submit_request(spec, payload(job_spec()), fair_share=True, client_token="t")


def test_the_harness_refuses_requests_the_model_or_the_documentation_refuses(batch):
    spec = job_spec()
    request = submit_request(spec, payload(spec), fair_share=True, client_token="t")
    with pytest.raises(RequestInvalid, match="serviceJobType"):
        batch.client.submit_service_job(**{**request, "serviceJobType": "SAGEMAKER_TRAINING_X"})
    with pytest.raises(RequestInvalid, match="clientToken"):
        batch.client.submit_service_job(**{**request, "clientToken": "x" * 65})
    with pytest.raises(AssertionError):
        batch.client.submit_service_job(**{**request, "schedulingPriority": 10000})
    bad_payload = {**payload(spec), "RoleArn": "arn:aws:iam::12345:role/not-twelve-digits"}
    with pytest.raises(RequestInvalid, match="CreateTrainingJob request: RoleArn"):
        batch.client.submit_service_job(**{**request, "serviceRequestPayload": json.dumps(bad_payload)})
    with pytest.raises(RequestInvalid, match='Missing required parameter in input: "jobQueue"'):
        batch.client.submit_service_job(**{k: v for k, v in request.items() if k != "jobQueue"})
    assert batch.requests == []


def test_the_whole_state_sequence_and_the_training_job_of_each_attempt(batch):
    started = {"STARTING", "RUNNING", "SUCCEEDED"}
    for status in SEQUENCE:
        batch.add_response(
            "describe_service_job",
            describe_response(JOB_NAME, status, attempts=1 if status in started else 0, payload=payload()),
            expected_params={"jobId": batch_job_id(JOB_NAME)},
        )
    seen = [
        read_service_job(batch.client.describe_service_job(jobId=batch_job_id(JOB_NAME))) for _ in SEQUENCE
    ]
    assert [job.state for job in seen] == [s for s in JobState if s is not JobState.FAILED]
    assert [job.training_job_name for job in seen[:4]] == [None] * 4
    expected_name = training_job_arn(JOB_NAME, 1).rsplit("/", 1)[1]
    assert {job.training_job_name for job in seen[4:]} == {expected_name}
    assert expected_name.startswith(f"AWSBatch{JOB_NAME}")
    done = seen[-1]
    assert done.payload == payload()
    assert done.queue.endswith(f"job-queue/{QUEUE}")
    assert done.stopped_at - done.created_at == pytest.approx(3600.0)
    assert done.started_at - done.created_at == pytest.approx(60.0)


def test_a_failed_job_keeps_its_reasons_and_every_attempt(batch):
    reason = "Essential container in task exited: AlgorithmError: CUDA out of memory"
    batch.add_response(
        "describe_service_job", describe_response(JOB_NAME, "FAILED", attempts=3, reason=reason)
    )
    job = read_service_job(batch.client.describe_service_job(jobId=batch_job_id(JOB_NAME)))
    assert job.state is JobState.FAILED
    assert job.status_reason == reason
    assert [a.training_job_arn for a in job.attempts] == [training_job_arn(JOB_NAME, i) for i in (1, 2, 3)]
    assert [a.status_reason for a in job.attempts] == ["AlgorithmError", "AlgorithmError", None]
    assert job.training_job_arn == training_job_arn(JOB_NAME, 3)


def test_listing_follows_every_page(batch):
    names = [f"jane-lbm-training-2026-12-01-11-00-00-{i:03d}" for i in range(5)]
    summaries = [summary_of(describe_response(n, "RUNNABLE")) for n in names]
    filters = [{"name": "AFTER_CREATED_AT", "values": ["1764586000000"]}]
    pages = [(summaries[:2], "page-2"), (summaries[2:4], "page-3"), (summaries[4:], None)]
    token = None
    for jobs, next_token in pages:
        expected = {"jobQueue": QUEUE, "filters": filters, **({"nextToken": token} if token else {})}
        answer = {"jobSummaryList": jobs, **({"nextToken": next_token} if next_token else {})}
        batch.add_response("list_service_jobs", answer, expected_params=expected)
        token = next_token
    listed = list(list_service_jobs(batch.client, QUEUE, created_after_s=1_764_586_000.0))
    assert [job.name for job in listed] == names
    assert {job.state for job in listed} == {JobState.RUNNABLE}


def test_listing_by_name(batch):
    answer = {"jobSummaryList": [summary_of(describe_response(JOB_NAME, "RUNNING", attempts=1))]}
    expected = {"jobQueue": QUEUE, "filters": [{"name": "JOB_NAME", "values": [JOB_NAME]}]}
    batch.add_response("list_service_jobs", answer, expected_params=expected)
    (job,) = list_service_jobs(batch.client, QUEUE, name=JOB_NAME)
    assert job.job_id == batch_job_id(JOB_NAME)
    assert job.training_job_arn == training_job_arn(JOB_NAME, 1)


def test_training_job_name_reads_only_training_job_arns():
    assert (
        training_job_name("arn:aws:sagemaker:us-west-2:123456789012:training-job/AWSBatchx1") == "AWSBatchx1"
    )
    with pytest.raises(ValueError, match="not a SageMaker training job ARN"):
        training_job_name("arn:aws:batch:us-west-2:123456789012:job/x")
