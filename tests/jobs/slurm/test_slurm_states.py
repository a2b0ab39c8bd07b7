"""Slurm's job states as lbm's, as the Slurm backend's documentation (issue 8) maps them."""

from __future__ import annotations

import pytest

from lbm.jobs.model import JobState
from lbm.jobs.slurm.commands import duration_s, gpus
from lbm.jobs.slurm.states import job_state


@pytest.mark.parametrize(
    ("slurm", "reason", "code", "expected"),
    [
        ("PENDING", "Priority", None, (JobState.RUNNABLE, "Priority")),
        ("PENDING", "Resources", None, (JobState.RUNNABLE, "Resources")),
        ("PENDING", "QOSMaxJobsPerUserLimit", None, (JobState.RUNNABLE, "QOSMaxJobsPerUserLimit")),
        ("PENDING", "Dependency", None, (JobState.PENDING, "Dependency")),
        ("PENDING", "None", None, (JobState.RUNNABLE, None)),
        ("REQUEUED", "None", None, (JobState.PENDING, "requeued")),
        ("CONFIGURING", "None", None, (JobState.STARTING, None)),
        ("RUNNING", "None", None, (JobState.RUNNING, None)),
        ("COMPLETING", "None", None, (JobState.RUNNING, None)),
        ("COMPLETED", "None", 0, (JobState.SUCCEEDED, None)),
        ("FAILED", "NonZeroExitCode", 3, (JobState.FAILED, "exit code 3")),
        ("CANCELLED by 0", None, None, (JobState.FAILED, "cancelled")),
        ("TIMEOUT", "TimeLimit", None, (JobState.FAILED, "timed out")),
        ("NODE_FAIL", None, None, (JobState.FAILED, "node failure")),
        ("PREEMPTED", None, None, (JobState.FAILED, "preempted")),
        ("OUT_OF_MEMORY", None, None, (JobState.FAILED, "out of memory")),
        ("BOOT_FAIL", None, None, (JobState.FAILED, "node failed to boot")),
    ],
)
def test_slurm_states_map_to_lbm_states_with_their_reason(slurm, reason, code, expected):
    assert job_state(slurm, reason, code) == expected


def test_an_unknown_state_is_a_bug_not_a_guess():
    with pytest.raises(ValueError, match="NEW_STATE"):
        job_state("NEW_STATE")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2:00:00", 7200),
        ("1-00:00:00", 86400),
        ("30", 1800),
        ("1-2", 93600),
        ("5:30", 330),
        ("UNLIMITED", None),
    ],
)
def test_slurm_durations(text, seconds):
    assert duration_s(text) == seconds


@pytest.mark.parametrize(
    ("gres", "count"),
    [("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4), ("gpu:0,tmpdisk:10", 0), ("", 0), ("gpu:h100:8,gpu:a100:2", 10)],
)
def test_gpu_counts_from_gres(gres, count):
    assert gpus(gres) == count
