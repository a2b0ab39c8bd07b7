"""The local backend with a real agent process: run, stop, cancel, logs, usage, bad input, secrets."""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading
from pathlib import Path

import pytest
from local_setup import ENDED, LocalSetup, process_gone, wait_for

from lbm.errors import LbmError
from lbm.jobs.backend import JobNameTaken
from lbm.jobs.local import daemon
from lbm.jobs.local.agent import LOST_SECRETS_NOTE
from lbm.jobs.model import JobState, Queue, StatusReason

FAKE_KEY = "wandb-fake-0123456789abcdef0123456789abcdef"
OTHER_KEY = "wandb-other-fedcba9876543210fedcba9876543210"

WRITE_OUTPUTS = """
import json, os, pathlib
out = pathlib.Path(os.environ["LBM_OUTPUT_DIR"])
print("hello from", os.environ["LBM_JOB_NAME"], "attempt", os.environ["LBM_ATTEMPT"])
print("artifacts at", os.environ["LBM_ARTIFACT_URI"])
(out / "metrics.jsonl").write_text(json.dumps({"step": 1, "epoch": 0, "train_loss": 0.5}) + "\\n")
(out / "wandb" / "run-1" / "files").mkdir(parents=True)
(out / "wandb" / "run-1" / "files" / "output.log").write_text("wandb says hi\\n")
"""


def test_submit_runs_to_success_with_log_and_archive(local: LocalSetup):
    submitted = local.submit("ann-lbm-training-1", WRITE_OUTPUTS)
    assert submitted.state == JobState.SUBMITTED

    job = local.wait_ended("ann-lbm-training-1")

    assert job.state == JobState.SUCCEEDED
    assert [(a.index, a.exit_code) for a in job.attempts] == [(0, 0)]
    assert job.started_at is not None and job.stopped_at >= job.started_at
    lines = list(local.backend.logs(job.name))
    assert lines == [
        "hello from ann-lbm-training-1 attempt 0",
        f"artifacts at {job.artifact_uri}",
    ]
    with tarfile.open(local.archive(job)) as tar:
        names = sorted(tar.getnames())
        log_text = tar.extractfile("logs/attempt-0.log").read().decode()
        metrics = json.loads(tar.extractfile("metrics.jsonl").read())
    assert names == ["logs/attempt-0.log", "metrics.jsonl", "wandb/run-1/files/output.log"]
    assert "hello from ann-lbm-training-1" in log_text
    assert metrics["train_loss"] == 0.5


def test_failed_job_records_exit_code(local: LocalSetup):
    local.submit("ann-fails", "import sys; print('boom'); sys.exit(3)")

    job = local.wait_ended("ann-fails")

    assert job.state == JobState.FAILED
    assert job.status_reason == StatusReason.exit_code(3)
    assert job.attempts[0].exit_code == 3


WAIT_WITH_CHILD = """
import os, pathlib, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
pathlib.Path({pids!r}).write_text(f"{{os.getpid()}} {{child.pid}}")
print("waiting", flush=True)
time.sleep(600)
"""


def test_stop_running_job_ends_its_whole_process_group(local: LocalSetup, tmp_path: Path):
    pids_file = tmp_path / "pids"
    local.submit("ann-long", WAIT_WITH_CHILD.format(pids=str(pids_file)))
    local.wait_state("ann-long", [JobState.RUNNING])
    wait_for(pids_file.exists, "the job to write its pids")
    pids = [int(p) for p in pids_file.read_text().split()]

    local.backend.stop("ann-long", reason=StatusReason.STOPPED_BY_USER)
    job = local.wait_ended("ann-long")

    assert job.state == JobState.FAILED
    assert job.status_reason == StatusReason.STOPPED_BY_USER
    wait_for(lambda: all(process_gone(pid) for pid in pids), "the job's processes to be gone")


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(local: LocalSetup, tmp_path: Path):
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(600)"
    )
    local.submit("ann-stubborn", code)
    wait_for(ready.exists, "the job to ignore SIGTERM")

    local.backend.stop("ann-stubborn", reason=StatusReason.STOPPED_BY_USER)

    job = local.wait_ended("ann-stubborn")
    assert job.status_reason == StatusReason.STOPPED_BY_USER
    assert job.attempts[0].exit_code == 128 + 9


def test_cancel_queued_job(local: LocalSetup):
    local.submit("ann-waits", "print('never')", queue="held")
    local.wait_state("ann-waits", [JobState.RUNNABLE])

    stopped = local.backend.stop("ann-waits", reason=StatusReason.STOPPED_BY_USER)

    assert stopped.state == JobState.FAILED
    assert stopped.status_reason == StatusReason.CANCELLED_IN_QUEUE
    assert stopped.attempts == []
    assert not local.home.output_dir("ann-waits").joinpath("logs").exists()


def test_logs_tail_head_and_follow(local: LocalSetup, tmp_path: Path):
    go = tmp_path / "go"
    code = (
        "import pathlib, time\n"
        "for i in range(250): print('line', i)\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.02)\n"
        "print('last line')\n"
    )
    local.submit("ann-chatty", code)
    local.wait_state("ann-chatty", [JobState.RUNNING])
    wait_for(lambda: "line 249" in list(local.backend.logs("ann-chatty")), "the first 250 lines")
    followed: list[str] = []
    follower = threading.Thread(target=lambda: followed.extend(local.backend.logs("ann-chatty", follow=True)))
    follower.start()

    go.touch()
    follower.join(timeout=60)

    assert not follower.is_alive()
    assert followed[-1] == "last line"
    tail = list(local.backend.logs("ann-chatty"))
    head = list(local.backend.logs("ann-chatty", from_head=True))
    assert tail == [f"line {i}" for i in range(151, 250)] + ["last line"]
    assert head == [f"line {i}" for i in range(250)] + ["last line"]


def test_list_describe_usage_and_queues(local: LocalSetup, tmp_path: Path):
    go = tmp_path / "go"
    local.submit(
        "ann-runs", f"import pathlib, time\nwhile not pathlib.Path({str(go)!r}).exists(): time.sleep(0.02)"
    )
    local.submit("bob-waits", "pass", owner="bob", queue="held")
    local.wait_state("ann-runs", [JobState.RUNNING])
    local.wait_state("bob-waits", [JobState.RUNNABLE])

    usage = {u.queue: (u.running, u.pending, u.capacity) for u in local.backend.usage()}
    names = [job.name for job in local.backend.list()]
    bobs = [job.name for job in local.backend.list(owner="bob")]
    running = [job.name for job in local.backend.list(states=[JobState.RUNNING])]
    go.touch()

    assert usage == {"solo": (1, 0, 1), "wide": (0, 0, 4), "held": (0, 1, 0)}
    assert names == ["bob-waits", "ann-runs"]
    assert bobs == ["bob-waits"] and running == ["ann-runs"]
    assert [q.name for q in local.backend.queues()] == ["solo", "wide", "held"]
    assert [job.name for job in local.backend.list(limit=1)] == ["bob-waits"]
    assert local.backend.describe("ann-runs").owner == "ann"


def test_unknown_job_is_a_user_error(local: LocalSetup):
    for call in (
        lambda: local.backend.describe("nope"),
        lambda: local.backend.stop("nope", reason=StatusReason.STOPPED_BY_USER),
        lambda: list(local.backend.logs("nope")),
    ):
        with pytest.raises(LbmError, match="no job named 'nope'"):
            call()


def test_stopping_a_finished_job_is_a_user_error(local: LocalSetup):
    local.submit("ann-quick", "pass")
    local.wait_ended("ann-quick")

    with pytest.raises(LbmError, match="already ended"):
        local.backend.stop("ann-quick", reason=StatusReason.STOPPED_BY_USER)


def test_duplicate_name_raises_job_name_taken(local: LocalSetup):
    local.submit("ann-same", "pass", queue="held")

    with pytest.raises(JobNameTaken):
        local.submit("ann-same", "pass", queue="held")
    assert [job.name for job in local.backend.list()] == ["ann-same"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"queue": "nowhere"}, "unknown queue 'nowhere'"),
        ({"instance_count": 2}, "runs a job on one machine"),
        ({"env": {"WANDB_API_KEY": FAKE_KEY}}, "must not hold secrets"),
    ],
)
def test_bad_submission_queues_nothing(local: LocalSetup, fields: dict, message: str):
    with pytest.raises(LbmError, match=message):
        local.submit("ann-bad", "pass", **fields)

    assert local.backend.list() == []


def test_gpu_jobs_get_their_own_devices(isolated_env: Path, tmp_path: Path):
    setup = LocalSetup(isolated_env, [Queue("gpus", "gpu-test", 3), Queue("cpus", "cpu", 1)])
    setup.devices = {"gpu-test": (0, 1, 2)}
    try:
        go = tmp_path / "go"
        code = (
            "import os, pathlib, time\n"
            "print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))\n"
            f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.02)\n"
        )
        setup.submit("pair", code, nproc_per_node=2)
        setup.submit("single", code)
        setup.submit("waiting", code)
        setup.submit("on-cpu", code, queue="cpus")
        for name in ("pair", "single", "on-cpu"):
            setup.wait_state(name, [JobState.RUNNING])
        wait_for(lambda: list(setup.backend.logs("single")), "the single-GPU job's output")
        assert setup.backend.describe("waiting").state == JobState.RUNNABLE
        go.touch()
        for name in ("pair", "single", "waiting", "on-cpu"):
            assert setup.wait_ended(name).state == JobState.SUCCEEDED
        devices = {
            name: list(setup.backend.logs(name))[0] for name in ("pair", "single", "waiting", "on-cpu")
        }
    finally:
        setup.clean_up()

    assert devices["pair"] == "'0,1'"
    assert devices["single"] == "'2'"
    assert devices["waiting"] in ("'0'", "'1'", "'2'")
    assert devices["on-cpu"] == "''"


HASH_KEY = """
import hashlib, os, pathlib
key = os.environ.get("WANDB_API_KEY", "")
pathlib.Path(os.environ["LBM_OUTPUT_DIR"], "key.sha256").write_text(hashlib.sha256(key.encode()).hexdigest())
print("my key is", key)
"""


def _files_containing(root: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".tar.gz"):
            with tarfile.open(path) as tar:
                data += b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
        found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def test_wandb_key_reaches_the_job_but_no_file(local: LocalSetup):
    # The first submit starts the agent and hands the key over once it listens; the second finds it running.
    local.submit("ann-first", HASH_KEY, secrets={"WANDB_API_KEY": FAKE_KEY})
    local.wait_ended("ann-first")
    local.submit("ann-second", HASH_KEY, secrets={"WANDB_API_KEY": OTHER_KEY})
    second = local.wait_ended("ann-second")
    first = local.backend.describe("ann-first")
    local.archive(first)
    local.archive(second)
    wait_for(lambda: not local.backend.store.unarchived(), "both archives to be recorded")

    for job, key in ((first, FAKE_KEY), (second, OTHER_KEY)):
        assert job.state == JobState.SUCCEEDED
        digest = (local.home.output_dir(job.name) / "key.sha256").read_text()
        assert digest == hashlib.sha256(key.encode()).hexdigest()
        assert list(local.backend.logs(job.name)) == ["my key is [REDACTED]"]
    assert _files_containing(local.root, [FAKE_KEY, OTHER_KEY]) == []


FIND_KEY = """
import json, os, pathlib
from lbm.secrets import wandb_api_key
found = {"env": os.environ.get("WANDB_API_KEY"), "env or netrc": wandb_api_key()}
pathlib.Path(os.environ["LBM_OUTPUT_DIR"], "key.json").write_text(json.dumps(found))
"""


def test_a_job_submitted_without_a_key_gets_none_from_the_agent(
    local: LocalSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Ann's environment has a key and a ~/.netrc with another; her submit starts the agent in it.
    ann_home = tmp_path / "ann"
    ann_home.mkdir()
    (ann_home / ".netrc").write_text(f"machine api.wandb.ai login ann password {OTHER_KEY}\n")
    (ann_home / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(ann_home))
    monkeypatch.delenv("NETRC")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    local.submit("ann-keyed", FIND_KEY, secrets={"WANDB_API_KEY": FAKE_KEY}, queue="wide")
    local.wait_state("ann-keyed", [JobState.RUNNING, *ENDED])

    local.submit("bob-keyless", FIND_KEY, owner="bob", queue="wide")

    found = {}
    for name in ("ann-keyed", "bob-keyless"):
        assert local.wait_ended(name).state == JobState.SUCCEEDED, list(local.backend.logs(name))
        found[name] = json.loads((local.home.output_dir(name) / "key.json").read_text())
    assert found == {
        "ann-keyed": {"env": FAKE_KEY, "env or netrc": FAKE_KEY},
        "bob-keyless": {"env": None, "env or netrc": None},
    }


FIND_AWS = """
import json, os, pathlib
names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
found = {name: os.environ.get(name) for name in names}
pathlib.Path(os.environ["LBM_OUTPUT_DIR"], "aws.json").write_text(json.dumps(found))
"""


def test_each_job_gets_its_submitters_aws_credentials_never_the_agents(
    local: LocalSetup, monkeypatch: pytest.MonkeyPatch
):
    # Ann's submit starts the agent in her environment, which holds her AWS credentials and profile.
    ann = {
        "AWS_ACCESS_KEY_ID": "ann-access-key",
        "AWS_SECRET_ACCESS_KEY": "ann-secret-access-key",
        "AWS_SESSION_TOKEN": "ann-session-token",
        "AWS_PROFILE": "ann-profile",
    }
    for name, value in ann.items():
        monkeypatch.setenv(name, value)
    local.submit("ann-aws", FIND_AWS, secrets=ann, queue="wide")
    local.wait_state("ann-aws", [JobState.RUNNING, *ENDED])
    bob = {"AWS_ACCESS_KEY_ID": "bob-access-key", "AWS_SECRET_ACCESS_KEY": "bob-secret-access-key"}
    local.submit("bob-aws", FIND_AWS, owner="bob", secrets=bob, queue="wide")
    local.submit("cat-none", FIND_AWS, owner="cat", queue="wide")

    found = {}
    for name in ("ann-aws", "bob-aws", "cat-none"):
        assert local.wait_ended(name).state == JobState.SUCCEEDED, list(local.backend.logs(name))
        found[name] = json.loads((local.home.output_dir(name) / "aws.json").read_text())
    assert found["ann-aws"] == ann
    assert found["bob-aws"] == {**bob, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None}
    assert found["cat-none"] == dict.fromkeys(ann)


def test_a_key_lost_in_an_agent_restart_is_not_replaced_by_the_agents_own(
    local: LocalSetup, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("WANDB_API_KEY", OTHER_KEY)  # in the environment of every agent started here
    local.submit("ann-waits", FIND_KEY, secrets={"WANDB_API_KEY": FAKE_KEY}, queue="held")
    local.kill_agent()  # the handed-over key was in its memory only
    opened = local.region([Queue("solo", "cpu", 1), Queue("wide", "cpu", 4), Queue("held", "cpu", 1)])
    local.backend.store.save_region(opened.name, opened.to_dict())

    daemon.ensure_agent(local.home)

    assert local.wait_ended("ann-waits").state == JobState.SUCCEEDED
    found = json.loads((local.home.output_dir("ann-waits") / "key.json").read_text())
    assert found == {"env": None, "env or netrc": None}
    assert list(local.backend.logs("ann-waits")) == [LOST_SECRETS_NOTE.decode().rstrip("\n")]


def test_describe_gives_every_state_the_job_went_through_in_order(local: LocalSetup):
    local.submit("ann-quick", "pass", queue="wide")
    local.wait_ended("ann-quick")

    job = local.backend.describe("ann-quick")

    states = [state for state, _ in job.transitions]
    assert states == [
        JobState.SUBMITTED,
        JobState.RUNNABLE,
        JobState.STARTING,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ]
    times = [at for _, at in job.transitions]
    assert times == sorted(times) and times[0] == job.created_at and abs(times[-1] - job.stopped_at) < 0.1
