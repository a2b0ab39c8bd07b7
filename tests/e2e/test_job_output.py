"""What a real training job leaves behind: its W&B key only in its environment, and a log that `sagey logs`
prints into pipes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from e2e_lab import BIN, Lab, files_containing, overrides, wait_for

from lbm.jobs.model import JobState

pytestmark = pytest.mark.slow

FAKE_WANDB_KEY = "fake-key-0123456789abcdef"


def test_the_wandb_key_reaches_the_training_process_and_no_file(lab: Lab):
    launched = lab.launch("--config-overrides", overrides(2), env={"WANDB_API_KEY": FAKE_WANDB_KEY})
    assert launched.wait() == 0, launched.output + launched.stderr()  # returns once the job runs
    name = launched.name()

    environ = lab.training_process(name).environ()

    assert environ.get("WANDB_API_KEY") == FAKE_WANDB_KEY
    job = lab.wait_state(name, [JobState.SUCCEEDED, JobState.FAILED])
    assert job.state is JobState.SUCCEEDED, lab.attempt_log(name, 0)
    archive = Path(job.artifact_uri.removeprefix("file://")) / "output" / "output.tar.gz"
    wait_for(archive.exists, "the output archive")
    wait_for(lambda: not lab.backend.store.unarchived(), "the agent to record the archive")
    assert lab.bucket.is_dir() and lab.home.root.is_dir()
    assert files_containing([lab.home.root, lab.bucket], FAKE_WANDB_KEY) == []
    assert FAKE_WANDB_KEY not in launched.output + launched.stderr()
    described = lab.run("sagey", "describe", name, "--json")
    assert described.returncode == 0 and FAKE_WANDB_KEY not in described.stdout


def test_sagey_logs_of_a_finished_job_from_the_head_and_into_a_pipe(lab: Lab):
    launched = lab.launch("--config-overrides", overrides(4), "--follow")
    assert launched.wait() == 0, launched.output + launched.stderr()
    name = launched.name()

    logs = lab.run("sagey", "logs", name, "--startfromhead")
    head = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{BIN / 'sagey'} logs {name} --startfromhead | head -1"],
        env=lab.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    grep = subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"{BIN / 'sagey'} logs {name} --startfromhead | grep -m1 '^\\[metrics\\]'",
        ],
        env=lab.env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == lab.attempt_log(name, 0)
    metrics = re.findall(r"^\[metrics\] step=(\d+) ", logs.stdout, re.MULTILINE)
    assert metrics == ["2", "4"]
    assert (head.returncode, head.stderr) == (0, "")
    assert head.stdout == logs.stdout.splitlines(keepends=True)[0]
    assert (grep.returncode, grep.stderr) == (0, "")
    assert grep.stdout.startswith("[metrics] step=2 epoch=0 train_loss=")
