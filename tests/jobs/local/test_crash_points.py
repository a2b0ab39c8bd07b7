"""The agent killed at each named step of an attempt's life: the next agent ends every job exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from local_setup import LocalSetup, agent_dies_at

from lbm.errors import LbmError
from lbm.jobs import crash_points
from lbm.jobs.crash_points import POINTS, CrashPoints
from lbm.jobs.local import daemon
from lbm.jobs.model import JobState

# Records each run of an attempt; `ann-retried` fails its first attempt and has one retry.
RECORD_RUN = """
import os, sys
with open({runs!r}, "a") as f:
    f.write(os.environ["LBM_JOB_NAME"] + " " + os.environ["LBM_ATTEMPT"] + "\\n")
sys.exit(3 if os.environ["LBM_JOB_NAME"] == "ann-retried" and os.environ["LBM_ATTEMPT"] == "0" else 0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_an_agent_killed_at_a_crash_point_is_replaced_and_every_job_ends_once(
    local: LocalSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
):
    runs = tmp_path / "runs"
    local.insert("ann-once", RECORD_RUN.format(runs=str(runs)), queue="wide")
    local.insert("ann-retried", RECORD_RUN.format(runs=str(runs)), queue="wide", retries=1)
    agent_dies_at(local, monkeypatch, point)

    assert daemon.start_agent(local.home)
    once, retried = local.wait_ended("ann-once"), local.wait_ended("ann-retried")

    assert once.state == retried.state == JobState.SUCCEEDED
    assert [(a.index, a.exit_code) for a in once.attempts] == [(0, 0)]
    assert [(a.index, a.exit_code) for a in retried.attempts] == [(0, 3), (1, 0)]
    assert sorted(runs.read_text().splitlines()) == ["ann-once 0", "ann-retried 0", "ann-retried 1"]
    agent_log = local.home.agent_log.read_text()
    assert agent_log.count(" serving ") == 2 and agent_log.count("crash point") == 1, agent_log


@pytest.mark.slow
def test_a_stop_asked_while_the_agent_was_dead_before_the_runner_started_ends_the_job_stopped(
    local: LocalSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    runs = tmp_path / "runs"
    local.insert("ann-once", RECORD_RUN.format(runs=str(runs)), queue="wide")
    agent_dies_at(local, monkeypatch, "starting-written")
    assert local.backend.store.job("ann-once").state == JobState.STARTING

    assert local.backend.store.request_stop("ann-once", "stopped by user")
    assert daemon.start_agent(local.home)

    job = local.wait_ended("ann-once")
    assert (job.state, job.status_reason) == (JobState.FAILED, "stopped by user")
    assert not runs.exists()


def test_crash_points_are_inert_without_the_setting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(crash_points.ENV, raising=False)
    points = CrashPoints.from_environment()

    for point in POINTS:
        points.reach(point)

    assert points.point is None and points.reached == 0


def test_the_setting_is_read_once_and_taken_out_of_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(crash_points.ENV, "settled:3")

    points = CrashPoints.from_environment()

    assert (points.point, points.occurrence) == ("settled", 3)
    assert crash_points.ENV not in os.environ
    points.reach("settled")
    points.reach("claimed")
    points.reach("settled")
    assert points.reached == 2  # the third `settled` would kill this process


@pytest.mark.parametrize("setting", ["nowhere", "settled:0", "settled:x", "settled:-1"])
def test_a_bad_setting_is_refused(monkeypatch: pytest.MonkeyPatch, setting: str):
    monkeypatch.setenv(crash_points.ENV, setting)

    with pytest.raises(LbmError, match="is not POINT"):
        CrashPoints.from_environment()
