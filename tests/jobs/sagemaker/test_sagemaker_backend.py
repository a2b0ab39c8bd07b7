"""`SageMakerBackend` against the Batch emulator and moto (SageMaker, CloudWatch Logs, S3)."""

from __future__ import annotations

import dataclasses
import json

import boto3
import pytest
from botocore.stub import Stubber
from sagemaker_harness import (
    AWS_CAPACITY,
    P4D_QUEUE,
    P5_QUEUE,
    REGION,
    SITE_CAPACITY,
    TEAM_QUEUE,
    job_spec,
)

from lbm.errors import LbmError
from lbm.jobs.backend import JobNameTaken
from lbm.jobs.model import JobState
from lbm.jobs.sagemaker.backend import SageMakerBackend
from lbm.jobs.watcher import JobWatcher
from lbm.notify.slack import SlackNotifier
from lbm.secrets import REDACTED
from lbm.site import load_site
from webhook import serving_webhook


@pytest.fixture
def backend(sagemaker_site) -> SageMakerBackend:
    backend = SageMakerBackend(load_site().region(REGION))
    backend.poll_interval_s = 0.05
    return backend


def spec_on(site_path, **changes):
    site = load_site()
    bucket = site.region(REGION).bucket
    name = changes.pop("name", "jane-lbm-training-2026-12-01-11-00-00-000")
    artifact = f"{bucket}/sagemaker_outputs/jane-lbm/{name}/"
    return job_spec(**{"name": name, "artifact_uri": artifact, "instance_count": 2, **changes})


def test_a_job_through_every_state_with_the_training_job_of_its_attempt(
    backend, batch_emulator, sagemaker_site
):
    spec = spec_on(sagemaker_site)
    aws_login = {"AWS_ACCESS_KEY_ID": "ASIAJANE", "AWS_SECRET_ACCESS_KEY": "jane-secret", "AWS_PROFILE": "sm"}
    job = backend.submit(spec, secrets={"WANDB_API_KEY": "wandb-key-of-jane", **aws_login})
    assert job.state is JobState.SUBMITTED and job.engine_id == batch_emulator.job(spec.name)["jobId"]
    seen = [backend.describe(spec.name).state]
    for status in ("PENDING", "RUNNABLE", "SCHEDULED"):
        batch_emulator.advance(spec.name, status)
        seen.append(backend.describe(spec.name).state)
    training_job = batch_emulator.start(spec.name)
    seen.append(backend.describe(spec.name).state)
    batch_emulator.run(spec.name)
    seen.append(backend.describe(spec.name).state)
    batch_emulator.finish(spec.name)
    done = backend.describe(spec.name)
    seen.append(done.state)
    assert seen == [s for s in JobState if s is not JobState.FAILED]
    (attempt,) = done.attempts
    assert attempt.engine_resource.endswith(f"training-job/{training_job}")
    assert done.spec.artifact_uri == spec.artifact_uri
    assert done.spec.owner == "jane" and done.spec.instance_count == 2 and done.spec.nproc_per_node == 8
    assert (done.spec.retries, done.spec.max_runtime_s, done.spec.priority) == (2, 2 * 86400.0, 10)
    assert done.spec.command == (
        "lbm",
        "train",
        "--config-uri",
        f"{spec.artifact_uri}config.yaml",
        "--nproc-per-node",
        "8",
    )
    payload = json.loads(batch_emulator.job(spec.name)["serviceRequestPayload"])
    assert payload["Environment"]["WANDB_API_KEY"] == "wandb-key-of-jane"
    assert not set(aws_login) & set(payload["Environment"])  # the training job runs as the site's role
    assert payload["Environment"]["LBM_CONFIG_URI"] == f"{spec.artifact_uri}config.yaml"


def test_a_taken_name_is_refused(backend, sagemaker_site):
    spec = spec_on(sagemaker_site)
    backend.submit(spec, secrets={})
    with pytest.raises(JobNameTaken):
        backend.submit(spec, secrets={})


def test_check_asks_aws_for_capacity_and_dry_run_the_site(backend, batch_emulator, sagemaker_site):
    over_aws = spec_on(sagemaker_site, instance_count=AWS_CAPACITY[P5_QUEUE] + 1)
    assert over_aws.instance_count <= SITE_CAPACITY[P5_QUEUE]
    with pytest.raises(LbmError, match=rf"--instance-count 4 is above the capacity of queue {P5_QUEUE} \(3"):
        backend.check(over_aws)
    before = list(batch_emulator.requests)
    request = backend.dry_run(over_aws)
    assert batch_emulator.requests == before
    payload = json.loads(request["serviceRequestPayload"])
    assert payload["Environment"]["WANDB_API_KEY"] == REDACTED
    with pytest.raises(LbmError, match=r"above the site's capacity of queue .* \(4 instances\)"):
        backend.dry_run(dataclasses.replace(over_aws, instance_count=5))
    notes = backend.check(spec_on(sagemaker_site, instance_count=3))
    assert any("wandbSecretId" in note for note in notes)


def test_what_the_engine_would_refuse_is_refused_before_anything_is_sent(
    backend, batch_emulator, sagemaker_site
):
    bad = [
        (
            spec_on(sagemaker_site, max_runtime_s=40 * 86400.0),
            r"--max-days 40 is above SageMaker's limit of 28 days",
        ),
        (
            spec_on(sagemaker_site, instance_type="ml.p4de.24xlarge"),
            r"instance type ml.p4de.24xlarge is not served by a queue",
        ),
        (spec_on(sagemaker_site, queue=P4D_QUEUE), rf"queue {P4D_QUEUE} runs ml.p4d.24xlarge"),
        (spec_on(sagemaker_site, queue="no-such-queue"), r"unknown queue 'no-such-queue'"),
    ]
    for spec, message in bad:
        with pytest.raises(LbmError, match=message):
            backend.submit(spec, secrets={})
    assert [op for op, _ in batch_emulator.requests if op == "SubmitServiceJob"] == []


def test_a_team_queue_gets_no_share_identifier(backend, batch_emulator, sagemaker_site):
    spec = spec_on(sagemaker_site, queue=TEAM_QUEUE, team="mvdp", share_identifier="mvdp")
    backend.submit(spec, secrets={})
    (request,) = [body for op, body in batch_emulator.requests if op == "SubmitServiceJob"]
    assert "shareIdentifier" not in request


def test_logs_of_every_host_and_following_to_the_end(backend, batch_emulator, sagemaker_site):
    spec = spec_on(sagemaker_site)
    backend.submit(spec, secrets={})
    with pytest.raises(LbmError, match="SUBMITTED: it has no log until its training job starts"):
        list(backend.logs(spec.name))
    batch_emulator.start(spec.name)
    batch_emulator.run(
        spec.name, {1: ["rank 0 up", "wandb: https://wandb.ai/tri/lbm/runs/abc"], 2: ["rank 8 up"]}
    )
    assert list(backend.logs(spec.name, from_head=True)) == [
        "[algo-1] rank 0 up",
        "[algo-2] rank 8 up",
        "[algo-1] wandb: https://wandb.ai/tri/lbm/runs/abc",
    ]
    lines = backend.logs(spec.name, follow=True)
    assert [next(lines) for _ in range(3)][-1].endswith("runs/abc")
    training_job = batch_emulator.job(spec.name)["latestAttempt"]["serviceResourceId"]["value"].rsplit(
        "/", 1
    )[1]
    batch_emulator.write_log(training_job, {1: ["[metrics] step=1 train_loss=0.5"]})
    batch_emulator.finish(spec.name)
    assert list(lines) == ["[algo-1] [metrics] step=1 train_loss=0.5"]


def test_following_goes_on_to_the_next_attempt(backend, batch_emulator, sagemaker_site):
    spec = spec_on(sagemaker_site)
    backend.submit(spec, secrets={})
    batch_emulator.start(spec.name)
    batch_emulator.run(spec.name, {1: ["first attempt", "Traceback: NCCL timeout"]})
    lines = backend.logs(spec.name, follow=True)
    assert [next(lines), next(lines)] == ["[algo-1] first attempt", "[algo-1] Traceback: NCCL timeout"]
    second = batch_emulator.start(spec.name)  # Batch retries: a new training job
    batch_emulator.run(spec.name, {1: ["resumed from step 100"]})
    batch_emulator.finish(spec.name)
    assert list(lines) == [f"[lbm] attempt 2: training job {second}", "[algo-1] resumed from step 100"]


def test_a_failed_job_says_why_sagemaker_failed_it(backend, batch_emulator, sagemaker_site):
    spec = spec_on(sagemaker_site)
    backend.submit(spec, secrets={})
    training_job = batch_emulator.start(spec.name)
    batch_emulator.finish(spec.name, "FAILED", "Essential container in task exited")
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    described = sagemaker.describe_training_job(TrainingJobName=training_job)
    failure = "AlgorithmError: ExecuteUserScriptError: CUDA out of memory"
    # moto's training jobs complete at once, without a FailureReason: SageMaker's answer for a failed one.
    answer = {k: v for k, v in described.items() if k != "ResponseMetadata"}
    answer.update(TrainingJobStatus="Failed", SecondaryStatus="Failed", FailureReason=failure)
    with Stubber(backend.aws.client("sagemaker")) as stubber:
        stubber.add_response("describe_training_job", answer, {"TrainingJobName": training_job})
        reason = backend.describe(spec.name).status_reason
    assert reason == f"Essential container in task exited; SageMaker: {failure}"


def test_stop_terminates_with_the_reason(backend, batch_emulator, sagemaker_site):
    spec = spec_on(sagemaker_site)
    backend.submit(spec, secrets={})
    batch_emulator.start(spec.name)
    batch_emulator.run(spec.name)
    stopped = backend.stop(spec.name, reason="stopped by user")
    assert stopped.state is JobState.FAILED and stopped.status_reason == "stopped by user"
    terminations = [body for op, body in batch_emulator.requests if op == "TerminateServiceJob"]
    assert terminations == [{"jobId": stopped.engine_id, "reason": "stopped by user"}]
    assert backend.stop(spec.name, reason="again").status_reason == "stopped by user"


def test_usage_counts_instances_in_use_and_jobs_waiting(backend, batch_emulator, sagemaker_site):
    running = spec_on(sagemaker_site, name="jane-lbm-training-2026-12-01-11-00-00-001")
    waiting = spec_on(sagemaker_site, name="jane-lbm-training-2026-12-01-11-00-00-002", instance_count=1)
    for spec in (running, waiting):
        backend.submit(spec, secrets={})
    batch_emulator.start(running.name)
    batch_emulator.run(running.name)
    batch_emulator.advance(waiting.name, "RUNNABLE")
    usage = {u.queue: u for u in backend.usage()}
    assert (usage[P5_QUEUE].running, usage[P5_QUEUE].pending, usage[P5_QUEUE].capacity) == (2, 1, 3)
    assert (usage[TEAM_QUEUE].running, usage[TEAM_QUEUE].pending, usage[TEAM_QUEUE].capacity) == (0, 0, 2)
    assert usage[P4D_QUEUE].instance_type == "ml.p4d.24xlarge"


def test_queues_come_from_aws_with_the_sites_knowledge(backend, sagemaker_site):
    queues = {q.name: q for q in backend.queues()}
    assert set(queues) >= {P5_QUEUE, TEAM_QUEUE, P4D_QUEUE}
    assert queues[P5_QUEUE].fair_share and not queues[TEAM_QUEUE].fair_share
    assert queues[P5_QUEUE].capacity == AWS_CAPACITY[P5_QUEUE]
    assert queues[TEAM_QUEUE].team == "mvdp" and queues[P4D_QUEUE].instance_type == "ml.p4d.24xlarge"


def test_list_reads_every_page_and_filters(backend, batch_emulator, sagemaker_site):
    names = [f"jane-lbm-training-2026-12-01-11-00-00-{i:03d}" for i in range(5)]
    for name in names:
        backend.submit(spec_on(sagemaker_site, name=name, instance_count=1), secrets={})
    backend.submit(
        spec_on(
            sagemaker_site,
            name="bob-lbm-training-2026-12-01-11-00-00-000",
            owner="bob",
            share_identifier="bob",
            instance_count=1,
        ),
        secrets={},
    )
    batch_emulator.finish(names[0], "FAILED", "AlgorithmError: CUDA out of memory")
    listed = backend.list(queue=P5_QUEUE)
    assert len(listed) == 6
    assert sorted(j.name for j in backend.list(owner="jane", states=[JobState.SUBMITTED])) == names[1:]
    (failed,) = backend.list(states=[JobState.FAILED])
    assert failed.status_reason == "AlgorithmError: CUDA out of memory"
    assert len(backend.list(owner="jane", limit=2)) == 2
    pages = [body for op, body in batch_emulator.requests if op == "ListServiceJobs" and "nextToken" in body]
    assert pages, "the emulator pages by 2: the listing must have asked for later pages"


def test_final_metrics_come_from_the_training_job(backend, batch_emulator, sagemaker_site):
    spec = spec_on(sagemaker_site)
    backend.submit(spec, secrets={})
    assert backend.final_metrics(spec.name) == {}
    training_job = batch_emulator.start(spec.name)
    described = boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName=training_job
    )
    expected = {m["MetricName"]: m["Value"] for m in described["FinalMetricDataList"]}
    assert expected and backend.final_metrics(spec.name) == expected


def test_unknown_jobs_are_one_line(backend):
    with pytest.raises(LbmError, match=r"unknown job 'nobody-lbm-training-x' in region us-east-1"):
        backend.describe("nobody-lbm-training-x")


def test_slack_hears_running_and_failed_from_the_watcher(backend, batch_emulator, sagemaker_site, tmp_path):
    spec = spec_on(sagemaker_site)
    with serving_webhook() as hook:
        watcher = JobWatcher(
            backend, SlackNotifier(hook.url, ("RUNNING", "FAILED")), tmp_path / "watch.sqlite"
        )
        assert watcher.poll() == []
        backend.submit(spec, secrets={})
        batch_emulator.start(spec.name)
        batch_emulator.run(spec.name)
        watcher.poll()
        batch_emulator.finish(spec.name, "FAILED", "AlgorithmError: exit code 3")
        watcher.poll()
        watcher.poll()
        watcher.close()
    assert [p["text"].splitlines()[0] for p in hook.payloads] == [
        f"Job {spec.name} is RUNNING (owner jane, queue {P5_QUEUE})",
        f"Job {spec.name} is FAILED (owner jane, queue {P5_QUEUE}): AlgorithmError: exit code 3",
    ]


def test_a_retried_submit_carries_the_same_client_token(backend, batch_emulator, sagemaker_site):
    spec = spec_on(sagemaker_site)
    again = SageMakerBackend(load_site().region(REGION))  # e.g. the launcher run again after a timeout
    token = backend.dry_run(spec)["clientToken"]
    assert again.dry_run(spec)["clientToken"] == token
    assert backend.dry_run(spec_on(sagemaker_site, name=f"{spec.name[:-3]}001"))["clientToken"] != token
    first = backend.submit(spec, secrets={})
    request = next(body for op, body in batch_emulator.requests if op == "SubmitServiceJob")
    assert request["clientToken"] == token
    assert again.aws.client("batch").submit_service_job(**request)["jobId"] == first.engine_id
    assert len(backend.list()) == 1
