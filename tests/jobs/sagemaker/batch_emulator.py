"""AWS Batch service jobs over HTTP on 127.0.0.1, for processes the tests start (`lbm launch`, `sagey`,
`batchy` reach it through AWS_ENDPOINT_URL_BATCH; moto, which has no service jobs, serves the rest).

Every request is checked against botocore's `batch` model, the documented limits and (SubmitServiceJob)
the payload against the `sagemaker` model; a refused one is answered as Batch would (ClientException) and
kept in `refused`. Jobs move only when the test says so (`start`, `run`, `finish`): starting an attempt
creates its training job in moto's SageMaker under Batch's own kind of name, `AWSBatch<name><attempt id>`,
and `run` writes each host's lines to its CloudWatch log stream.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from sagemaker_harness import ACCOUNT, REGION, check_documented_batch_rules, summary_of

from lbm.jobs.sagemaker.service_model import check_request

TERMINAL = ("SUCCEEDED", "FAILED")
SIGNED_REGION = re.compile(r"Credential=[^/]+/\d+/([a-z0-9-]+)/")
ENVIRONMENT_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:service-environment"
OPERATIONS = {
    "/v1/submitservicejob": "SubmitServiceJob",
    "/v1/describeservicejob": "DescribeServiceJob",
    "/v1/listservicejobs": "ListServiceJobs",
    "/v1/terminateservicejob": "TerminateServiceJob",
    "/v1/getjobqueuesnapshot": "GetJobQueueSnapshot",
    "/v1/describejobqueues": "DescribeJobQueues",
    "/v1/describeserviceenvironments": "DescribeServiceEnvironments",
}


class Refused(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class EmulatedQueue:
    name: str
    fair_share: bool
    max_instances: int

    @property
    def arn(self) -> str:
        return f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/{self.name}"

    @property
    def environment(self) -> str:
        return f"sm-env-{self.name}"


class BatchEmulator:
    """Service job queues `queues`; `page_size` jobs per ListServiceJobs page."""

    def __init__(self, queues: list[EmulatedQueue], page_size: int = 2):
        self.queues = {q.name: q for q in queues}
        self.page_size = page_size
        self.jobs: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[str] = []
        self.regions_seen: set[str] = set()  # the regions requests were signed for
        self.credentials_expired = False  # answer every request as AWS does once a session token expired
        self.throttle = 0  # answer this many next requests as AWS does when it throttles
        self.lock = threading.RLock()
        self.outcomes: dict[str, str] | None = None  # see `drive`
        self.held_queues: set[str] = set()
        self.sagemaker = boto3.client("sagemaker", region_name=REGION)
        self.logs = boto3.client("logs", region_name=REGION)
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                scope = SIGNED_REGION.search(self.headers.get("Authorization", ""))
                emulator.regions_seen.add(scope.group(1) if scope else "")
                status, answer, headers = emulator.answer(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join()

    # --- the API -----------------------------------------------------------------------------------------

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        operation = OPERATIONS.get(path.split("?")[0])
        try:
            if self.throttle:
                self.throttle -= 1
                raise Refused("ThrottlingException", "Rate exceeded", 429)
            if self.credentials_expired:
                raise Refused("ExpiredTokenException", "The security token in the request is expired", 403)
            if operation is None:
                raise Refused("ClientException", f"unknown operation {path}")
            try:
                check_request("batch", operation, body)
                check_documented_batch_rules(operation, body)
            except Exception as error:  # noqa: BLE001 - a refused request of any kind
                self.refused.append(f"{operation}: {error!r}")
                raise Refused("ClientException", f"invalid request: {error}") from None
            with self.lock:
                self.requests.append((operation, body))
                if self.outcomes is not None:
                    for job in list(self.jobs.values()):
                        self._step(job)
                return 200, getattr(self, f"_{operation}")(body), {}
        except Refused as refused:
            return refused.status, {"message": refused.message}, {"x-amzn-ErrorType": refused.code}

    def _queue(self, name: str) -> EmulatedQueue:
        queue = self.queues.get(name.rsplit("/", 1)[-1])
        if queue is None:
            raise Refused("ClientException", f"job queue {name} does not exist")
        return queue

    def _SubmitServiceJob(self, body):  # noqa: N802
        queue = self._queue(body["jobQueue"])
        if queue.fair_share != ("shareIdentifier" in body):
            raise Refused("ClientException", "shareIdentifier is required on, and only on, fair-share queues")
        if body.get("clientToken") in self.tokens:
            job = self.jobs[self.tokens[body["clientToken"]]]
            return {"jobArn": job["jobArn"], "jobName": job["jobName"], "jobId": job["jobId"]}
        job_id = str(uuid.uuid4())
        now = int(time.time() * 1000)
        job = {
            "jobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:service-job/{job_id}",
            "jobId": job_id,
            "jobName": body["jobName"],
            "jobQueue": queue.arn,
            "serviceJobType": body["serviceJobType"],
            "serviceRequestPayload": body["serviceRequestPayload"],
            "status": "SUBMITTED",
            "createdAt": now,
            "startedAt": 0,
            "retryStrategy": body.get("retryStrategy", {"attempts": 1}),
            "timeoutConfig": body.get("timeoutConfig", {}),
            "tags": body.get("tags", {}),
            "isTerminated": False,
            "attempts": [],
        }
        for key in ("shareIdentifier", "schedulingPriority"):
            if key in body:
                job[key] = body[key]
        self.jobs[job_id] = job
        if "clientToken" in body:
            self.tokens[body["clientToken"]] = job_id
        return {"jobArn": job["jobArn"], "jobName": job["jobName"], "jobId": job_id}

    def _job(self, job_id: str) -> dict[str, Any]:
        if job_id not in self.jobs:
            raise Refused("ClientException", f"service job {job_id} does not exist")
        return self.jobs[job_id]

    def _DescribeServiceJob(self, body):  # noqa: N802
        return json.loads(json.dumps(self._job(body["jobId"])))

    def _ListServiceJobs(self, body):  # noqa: N802
        queue = self._queue(body["jobQueue"])
        jobs = [j for j in self.jobs.values() if j["jobQueue"] == queue.arn]
        filters = {f["name"]: f["values"] for f in body.get("filters", [])}
        if "JOB_NAME" in filters:
            jobs = [j for j in jobs if j["jobName"] in filters["JOB_NAME"]]
        elif "AFTER_CREATED_AT" in filters:
            jobs = [j for j in jobs if j["createdAt"] > int(filters["AFTER_CREATED_AT"][0])]
        else:
            jobs = [j for j in jobs if j["status"] == body.get("jobStatus", "RUNNING")]
        jobs.sort(key=lambda j: j["createdAt"], reverse=True)
        start = int(body.get("nextToken", 0))
        size = min(self.page_size, body.get("maxResults", self.page_size))
        page = [summary_of(j) for j in jobs[start : start + size]]
        answer: dict[str, Any] = {"jobSummaryList": page}
        if start + size < len(jobs):
            answer["nextToken"] = str(start + size)
        return answer

    def _TerminateServiceJob(self, body):  # noqa: N802
        job = self._job(body["jobId"])
        if job["status"] not in TERMINAL:
            self._end(job, "FAILED", body["reason"])
        return {}

    def _GetJobQueueSnapshot(self, body):  # noqa: N802
        queue = self._queue(body["jobQueue"])
        jobs = [j for j in self.jobs.values() if j["jobQueue"] == queue.arn]
        in_use = sum(self._instances(j) for j in jobs if j["status"] in ("STARTING", "RUNNING"))
        waiting = sorted((j for j in jobs if j["status"] == "RUNNABLE"), key=lambda j: j["createdAt"])
        now = int(time.time() * 1000)
        return {
            "frontOfQueue": {
                "jobs": [{"jobArn": j["jobArn"], "earliestTimeAtPosition": now} for j in waiting],
                "lastUpdatedAt": now,
            },
            "queueUtilization": {
                "totalCapacityUsage": [{"capacityUnit": "NUM_INSTANCES", "quantity": in_use}],
                "lastUpdatedAt": now,
            },
        }

    def _DescribeJobQueues(self, body):  # noqa: N802
        names = body.get("jobQueues") or list(self.queues)
        details = []
        for name in names:
            queue = self.queues.get(name.rsplit("/", 1)[-1])
            if queue is None:
                continue
            detail = {
                "jobQueueName": queue.name,
                "jobQueueArn": queue.arn,
                "state": "ENABLED",
                "status": "VALID",
                "priority": 1,
                "computeEnvironmentOrder": [],
                "serviceEnvironmentOrder": [{"order": 1, "serviceEnvironment": queue.environment}],
                "jobQueueType": "SAGEMAKER_TRAINING",
            }
            if queue.fair_share:
                detail["schedulingPolicyArn"] = f"arn:aws:batch:{REGION}:{ACCOUNT}:scheduling-policy/fss"
            details.append(detail)
        return {"jobQueues": details}

    def _DescribeServiceEnvironments(self, body):  # noqa: N802
        wanted = set(body.get("serviceEnvironments") or [q.environment for q in self.queues.values()])
        return {
            "serviceEnvironments": [
                {
                    "serviceEnvironmentName": q.environment,
                    "serviceEnvironmentArn": f"{ENVIRONMENT_ARN}/{q.environment}",
                    "serviceEnvironmentType": "SAGEMAKER_TRAINING",
                    "state": "ENABLED",
                    "status": "VALID",
                    "capacityLimits": [{"maxCapacity": q.max_instances, "capacityUnit": "NUM_INSTANCES"}],
                }
                for q in self.queues.values()
                if q.environment in wanted
            ]
        }

    # --- what the engine does, when the test says so -------------------------------------------------------

    def job(self, name: str) -> dict[str, Any]:
        (job,) = [j for j in self.jobs.values() if j["jobName"] == name]
        return job

    @staticmethod
    def _instances(job: dict[str, Any]) -> int:
        return json.loads(job["serviceRequestPayload"])["ResourceConfig"]["InstanceCount"]

    def advance(self, name: str, status: str) -> None:
        """Move a queued job on (PENDING, RUNNABLE, SCHEDULED)."""
        with self.lock:
            self.job(name)["status"] = status

    def start(self, name: str) -> str:
        """A new attempt: its training job created in moto's SageMaker; the job STARTING. Its name."""
        with self.lock:
            job = self.job(name)
            attempt = len(job["attempts"]) + 1
            training_job = f"AWSBatch{name}"[:50] + f"{job['jobId'][:8]}{attempt}"
            payload = {**json.loads(job["serviceRequestPayload"]), "TrainingJobName": training_job}
            arn = self.sagemaker.create_training_job(**payload)["TrainingJobArn"]
            now = int(time.time() * 1000)
            resource = {"name": "TrainingJobArn", "value": arn}
            job["attempts"].append({"serviceResourceId": resource, "startedAt": now})
            job["latestAttempt"] = {"serviceResourceId": resource}
            job["status"] = "STARTING"
            return training_job

    def run(self, name: str, lines: dict[int, list[str]] | None = None) -> None:
        """The job RUNNING; `lines` by host number go to the training job's log streams."""
        with self.lock:
            job = self.job(name)
            job["status"] = "RUNNING"
            job["startedAt"] = job["startedAt"] or int(time.time() * 1000)
            training_job = job["latestAttempt"]["serviceResourceId"]["value"].rsplit("/", 1)[1]
        self.write_log(training_job, lines or {})

    def write_log(self, training_job: str, lines: dict[int, list[str]]) -> None:
        group = "/aws/sagemaker/TrainingJobs"
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_group(logGroupName=group)
        now = int(time.time() * 1000)
        for host, messages in lines.items():
            stream = f"{training_job}/algo-{host}-1764586800"
            with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
                self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
            events = [{"timestamp": now + 2 * i + host, "message": m} for i, m in enumerate(messages)]
            if events:
                self.logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    def finish(self, name: str, status: str = "SUCCEEDED", reason: str | None = None) -> None:
        with self.lock:
            self._end(self.job(name), status, reason or "Essential container in task exited")

    @staticmethod
    def _end(job: dict[str, Any], status: str, reason: str) -> None:
        now = int(time.time() * 1000)
        job.update(status=status, statusReason=reason, stoppedAt=now, isTerminated=True)
        if job["attempts"]:
            job["attempts"][-1].update(stoppedAt=now, statusReason=reason)

    # --- the engine on its own -----------------------------------------------------------------------------

    def drive(self, outcomes: dict[str, str], held_queues: set[str]) -> None:
        """From now on, each request moves every job one state on: through the queue (jobs on
        `held_queues` stay RUNNABLE, as on a queue others fill), a started attempt that logs
        `contract job <name>`, then the end `outcomes[name]` gives ("succeed", "fail"; "hold" runs until
        `release`)."""
        self.outcomes = outcomes
        self.held_queues = held_queues

    def release(self, name: str) -> None:
        with self.lock:
            self.outcomes[name] = "succeed"

    def _step(self, job: dict[str, Any]) -> None:
        name, status = job["jobName"], job["status"]
        queue = job["jobQueue"].rsplit("/", 1)[-1]
        following = {"SUBMITTED": "PENDING", "PENDING": "RUNNABLE", "RUNNABLE": "SCHEDULED"}
        if status in following and not (status == "RUNNABLE" and queue in self.held_queues):
            job["status"] = following[status]
        elif status == "SCHEDULED":
            self.start(name)
        elif status == "STARTING":
            self.run(name, {1: [f"contract job {name}"]})
        elif status == "RUNNING" and self.outcomes.get(name, "succeed") != "hold":
            failed = self.outcomes.get(name) == "fail"
            self._end(
                job,
                "FAILED" if failed else "SUCCEEDED",
                "AlgorithmError: exit code 3" if failed else "Essential container in task exited",
            )
