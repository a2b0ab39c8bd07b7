"""The agent under stress: retries, time limits, concurrent submitters, fair share, and being killed."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from local_setup import LocalSetup, process_gone, wait_for

from lbm.jobs.local import daemon
from lbm.jobs.model import JobState, Queue, StatusReason

pytestmark = pytest.mark.slow

MARK_THEN_WAIT = """
import os, pathlib, time
with open({marker!r}, "a") as f:
    f.write(os.environ["LBM_JOB_NAME"] + " " + os.environ["LBM_ATTEMPT"] + "\\n")
go = pathlib.Path({go_dir!r}, os.environ["LBM_JOB_NAME"])
while not go.exists():
    time.sleep(0.02)
"""

WRITE_PID_THEN_WAIT = (
    "import os, pathlib, time; pathlib.Path({pid_file!r}).write_text(str(os.getpid())); time.sleep(600)"
)


def test_failed_attempt_with_a_retry_left_runs_again_in_the_same_output_dir(local: LocalSetup):
    code = """
import os, pathlib, sys
out = pathlib.Path(os.environ["LBM_OUTPUT_DIR"])
with open(out / "attempts.txt", "a") as f:
    f.write(f"{os.environ['LBM_ATTEMPT']} {out}\\n")
if not (out / "checkpoint").exists():
    (out / "checkpoint").write_text("epoch 1")
    sys.exit(3)
print("resumed from", (out / "checkpoint").read_text())
"""
    local.submit("ann-retried", code, retries=1)

    job = local.wait_ended("ann-retried")

    assert job.state == JobState.SUCCEEDED
    assert [(a.index, a.exit_code, a.status_reason) for a in job.attempts] == [
        (0, 3, StatusReason.exit_code(3)),
        (1, 0, StatusReason.exit_code(0)),
    ]
    output_dir = local.home.output_dir("ann-retried")
    assert (output_dir / "attempts.txt").read_text().splitlines() == [f"0 {output_dir}", f"1 {output_dir}"]
    assert list(local.backend.logs("ann-retried")) == ["resumed from epoch 1"]


def test_no_retry_left_fails_with_the_last_exit_code(local: LocalSetup):
    local.submit("ann-twice", "import sys; sys.exit(5)", retries=1)

    job = local.wait_ended("ann-twice")

    assert job.state == JobState.FAILED
    assert job.status_reason == StatusReason.exit_code(5)
    assert len(job.attempts) == 2


def test_max_runtime_fails_the_job_as_timed_out_without_retry(local: LocalSetup, tmp_path: Path):
    pid_file = tmp_path / "pid"
    code = WRITE_PID_THEN_WAIT.format(pid_file=str(pid_file))
    local.submit("ann-slow", code, max_runtime_s=1.0, retries=2)

    job = local.wait_ended("ann-slow", timeout=30)

    assert job.state == JobState.FAILED
    assert job.status_reason == StatusReason.TIMED_OUT
    assert [a.status_reason for a in job.attempts] == [StatusReason.TIMED_OUT]
    assert job.stopped_at - job.attempts[0].started_at < 10
    wait_for(lambda: process_gone(int(pid_file.read_text())), "the timed-out process to be gone")


SUBMIT_ONE = """
import json, sys
from pathlib import Path
from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.model import JobSpec
from lbm.jobs.region import Region
home, region, spec = sys.argv[1], Region.from_dict(json.loads(sys.argv[2])), json.loads(sys.argv[3])
spec["command"] = tuple(spec["command"])
try:
    LocalBackend(region, Path(home)).submit(JobSpec(**spec), {})
except Exception as error:
    print(type(error).__name__)
    sys.exit(1)
"""


def _submit_in_processes(local: LocalSetup, specs: list) -> list[subprocess.CompletedProcess]:
    region = json.dumps(local.region().to_dict())
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SUBMIT_ONE,
                str(local.home.root),
                region,
                json.dumps(dataclasses.asdict(s)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for s in specs
    ]
    return [(p.wait(timeout=120), p.stdout.read().strip()) for p in processes]


def test_twenty_concurrent_submitters_get_twenty_jobs_all_run_once(local: LocalSetup, tmp_path: Path):
    marker = tmp_path / "marker"
    code = f"import os\nwith open({str(marker)!r}, 'a') as f: f.write(os.environ['LBM_JOB_NAME'] + '\\n')"
    names = [f"user{i}-lbm-training" for i in range(20)]
    specs = [local.spec(name, code, owner=f"user{i}", queue="wide") for i, name in enumerate(names)]

    results = _submit_in_processes(local, specs)

    assert [code for code, _ in results] == [0] * 20
    for name in names:
        assert local.wait_ended(name).state == JobState.SUCCEEDED
    assert sorted(marker.read_text().split()) == sorted(names)
    assert local.home.agent_log.read_text().count(" serving ") == 1


def test_concurrent_submitters_of_one_name_get_exactly_one_job(local: LocalSetup):
    spec = local.spec("ann-contested", "pass", queue="held")

    results = _submit_in_processes(local, [spec] * 5)

    assert sorted(results) == [(0, "")] + [(1, "JobNameTaken")] * 4
    assert [job.name for job in local.backend.list()] == ["ann-contested"]


def test_two_owners_sharing_one_slot_take_turns(isolated_env: Path, tmp_path: Path):
    marker = tmp_path / "order"
    code = (
        f"import os, time\nwith open({str(marker)!r}, 'a') as f:\n"
        "    f.write(os.environ['LBM_JOB_NAME'] + '\\n')\ntime.sleep(0.2)"
    )
    closed = LocalSetup(isolated_env, [Queue("shared", "cpu", 0, share_decay_seconds=3600)])
    try:
        names = [f"ann-{i}" for i in range(4)] + [f"bob-{i}" for i in range(4)]
        for name in names:
            closed.submit(name, code, owner=name.split("-")[0])
        # Open the queue (capacity 1) only once every job waits in it.
        opened = closed.region([Queue("shared", "cpu", 1, share_decay_seconds=3600)])
        closed.backend.store.save_region(opened.name, opened.to_dict())
        daemon.ensure_agent(closed.home)
        for name in names:
            assert closed.wait_ended(name).state == JobState.SUCCEEDED
    finally:
        closed.clean_up()

    order = marker.read_text().split()
    assert order[0] == "ann-0"
    for n in range(1, len(order) + 1):
        started = [name.split("-")[0] for name in order[:n]]
        assert abs(started.count("ann") - started.count("bob")) <= 1, order


def test_killed_agent_is_replaced_and_no_job_is_lost_or_run_twice(local: LocalSetup, tmp_path: Path):
    marker, go_dir = tmp_path / "marker", tmp_path / "go"
    go_dir.mkdir()
    code = MARK_THEN_WAIT.format(marker=str(marker), go_dir=str(go_dir))
    names = [f"ann-{i}" for i in range(5)]
    for name in names:
        local.submit(name, code, queue="wide")
    for name in names[:4]:
        local.wait_state(name, [JobState.RUNNING])

    local.kill_agent()
    (go_dir / "ann-0").touch()  # ends while no agent watches
    wait_for(lambda: local.home.attempt_exit("ann-0", 0).exists(), "ann-0 to record its exit")
    assert local.backend.store.job("ann-0").state == JobState.RUNNING  # (describe would restart the agent)
    assert daemon.start_agent(local.home)

    assert local.wait_ended("ann-0").state == JobState.SUCCEEDED
    local.wait_state("ann-4", [JobState.RUNNING])
    for name in names[1:]:
        (go_dir / name).touch()
    jobs = [local.wait_ended(name) for name in names]

    assert [job.state for job in jobs] == [JobState.SUCCEEDED] * 5
    assert [len(job.attempts) for job in jobs] == [1] * 5
    assert sorted(marker.read_text().splitlines()) == [f"{name} 0" for name in names]


def test_stop_works_while_the_agent_is_dead(local: LocalSetup, tmp_path: Path):
    pid_file = tmp_path / "pid"
    code = WRITE_PID_THEN_WAIT.format(pid_file=str(pid_file))
    local.submit("ann-orphan", code)
    local.wait_state("ann-orphan", [JobState.RUNNING])
    wait_for(pid_file.exists, "the job to start")
    local.kill_agent()

    local.backend.stop("ann-orphan", reason=StatusReason.STOPPED_BY_USER)

    wait_for(lambda: process_gone(int(pid_file.read_text())), "the job's process to be gone")
    job = local.wait_ended("ann-orphan")
    assert job.status_reason == StatusReason.STOPPED_BY_USER


def test_attempt_whose_runner_vanished_is_settled_as_lost_and_retried(local: LocalSetup, tmp_path: Path):
    marker, go_dir = tmp_path / "marker", tmp_path / "go"
    go_dir.mkdir()
    local.submit("ann-lost", MARK_THEN_WAIT.format(marker=str(marker), go_dir=str(go_dir)), retries=1)
    local.wait_state("ann-lost", [JobState.RUNNING])
    wait_for(marker.exists, "the first attempt to start")
    local.kill_agent()
    attempt = local.backend.store.active_attempts("ann-lost")[0]
    os.killpg(attempt.pid, signal.SIGKILL)  # the whole attempt dies without recording an exit code
    wait_for(lambda: process_gone(attempt.pid), "the attempt to die")
    (go_dir / "ann-lost").touch()

    assert daemon.start_agent(local.home)
    job = local.wait_ended("ann-lost")

    assert job.state == JobState.SUCCEEDED
    assert [a.status_reason for a in job.attempts] == [StatusReason.AGENT_LOST, StatusReason.exit_code(0)]
    assert marker.read_text().splitlines() == ["ann-lost 0", "ann-lost 1"]
