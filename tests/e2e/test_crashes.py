"""Real training jobs survive crashes: a killed training process is retried from its last checkpoint, and
a killed agent is replaced without losing or repeating a job."""

from __future__ import annotations

import os
import re
import signal

import psutil
import pytest
from e2e_lab import USER, Lab, complete_checkpoints, metric_steps, overrides, wait_for

from lbm.jobs.local.daemon import agent_pid, agent_running
from lbm.jobs.model import JobState

pytestmark = pytest.mark.slow


def test_a_killed_attempt_is_retried_and_resumes_from_its_last_checkpoint(lab: Lab):
    launched = lab.launch("--config-overrides", overrides(8), "--retries", "1", "--no-wait")
    assert launched.wait() == 0, launched.output + launched.stderr()
    name = launched.name()
    output_dir = lab.output_dir(name)
    training = lab.training_process(name)

    wait_for(lambda: complete_checkpoints(output_dir), "the first complete checkpoint")
    assert training.is_running(), "the run ended before it could be killed mid-way"
    os.kill(training.pid, signal.SIGKILL)
    training.wait(timeout=60)
    before_kill = complete_checkpoints(output_dir)
    last_step = max(before_kill)
    assert last_step < 8

    job = lab.wait_state(name, [JobState.SUCCEEDED, JobState.FAILED])

    assert job.state is JobState.SUCCEEDED, lab.attempt_log(name, len(job.attempts) - 1)
    assert [(a.index, a.exit_code, a.status_reason) for a in job.attempts] == [
        (0, 128 + signal.SIGKILL, f"exit code {128 + signal.SIGKILL}"),
        (1, 0, "exit code 0"),
    ]
    agent_log = lab.home.agent_log.read_text()
    assert f"job {name} attempt 0 ended (exit code 137): RUNNABLE" in agent_log
    resumed = f"resuming from {before_kill[last_step]} at step {last_step}"
    assert resumed in lab.attempt_log(name, 1)
    assert "resuming from" not in lab.attempt_log(name, 0)
    steps = metric_steps((output_dir / "metrics.jsonl").read_text())
    assert steps == sorted(set(steps)) and steps[-1] == 8
    assert set(range(2, 9, 2)) <= set(steps)
    bucket_metrics = lab.bucket / "outputs" / f"{USER}-lbm" / name / "metrics.jsonl"
    assert (
        metric_steps(wait_for(lambda: bucket_metrics.exists() and bucket_metrics.read_text(), "metrics"))
        == steps
    )


def test_a_killed_agent_is_replaced_and_each_job_runs_once(lab: Lab):
    first = lab.launch("--config-overrides", overrides(2), "--no-wait")
    assert first.wait() == 0, first.output + first.stderr()
    second = lab.launch("--config-overrides", overrides(2), "--no-wait")
    assert second.wait() == 0, second.output + second.stderr()
    running, queued = first.name(), second.name()
    training = lab.training_process(running)
    lab.wait_state(queued, [JobState.RUNNABLE])  # behind it: the queue has one slot

    os.kill(wait_for(lambda: agent_pid(lab.home), "the agent's pid"), signal.SIGKILL)
    wait_for(lambda: not agent_running(lab.home), "the killed agent's lock to be free")
    assert training.is_running() and training.status() != psutil.STATUS_ZOMBIE  # the attempt outlives it

    listed = lab.run("sagey", "ls")  # a command that finds jobs unattended starts a new agent
    assert listed.returncode == 0, listed.stderr
    assert agent_running(lab.home)

    for name in (running, queued):
        job = lab.wait_state(name, [JobState.SUCCEEDED, JobState.FAILED])
        assert job.state is JobState.SUCCEEDED, lab.attempt_log(name, 0)
        assert [(a.index, a.exit_code) for a in job.attempts] == [(0, 0)]
        log = lab.attempt_log(name, 0)
        assert len(re.findall(r"^finished at step 2;", log, re.MULTILINE)) == 1, log
        assert "resuming from" not in log
        assert metric_steps((lab.output_dir(name) / "metrics.jsonl").read_text()) == [2]
    assert f"adopted job {running} attempt 0" in lab.home.agent_log.read_text()
