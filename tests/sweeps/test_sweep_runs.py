"""Sweeps of real tiny training jobs on the local backend: the run cap, the agents, grid points, failures,
a controller killed and resumed, stop."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess

import psutil
import pytest
from sweep_lab import (
    jobs,
    most_at_once,
    resolved,
    run_sweep,
    sweep_args,
    sweep_folder,
    sweep_runs,
    write_sweep,
)

from e2e.e2e_lab import Lab, wait_for
from lbm.jobs.model import JobState
from lbm.sweeps.engine import draw_point
from lbm.sweeps.sweep_file import parse_sweep

pytestmark = pytest.mark.slow

LR = [0.001, 0.002, 0.003]
SEEDS = [1, 2]
GRID = {
    "method": "grid",
    "metric": {"name": "val_loss", "goal": "minimize"},
    "parameters": {
        "optimizer": {"parameters": {"lr": {"values": LR}}},
        "training": {"parameters": {"seed": {"values": SEEDS}}},
    },
}
RANDOM = {
    "method": "random",
    "metric": {"name": "val_loss", "goal": "minimize"},
    "parameters": {
        "optimizer": {"parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}}
    },
}


def test_a_3x2_grid_with_more_runs_allowed_makes_its_6_points_once(lab: Lab):
    done = run_sweep(
        lab, write_sweep(lab, "grid.yaml", GRID), "--max-runs", "10", "--max-agents", "3", "--name", "g"
    )

    assert done.returncode == 0, done.stdout + done.stderr
    runs = sweep_runs("g")
    points = [(r["parameters"]["optimizer.lr"], r["parameters"]["training.seed"]) for r in runs]
    assert sorted(points) == sorted(itertools.product(LR, SEEDS))
    assert [r["state"] for r in runs] == ["succeeded"] * 6
    launched = jobs(lab)
    assert len(launched) == 6
    assert sorted(
        (resolved(j)["optimizer"]["lr"], resolved(j)["training"]["seed"]) for j in launched
    ) == sorted(points)
    assert all(resolved(j)["logging"]["group"] == "g" for j in launched)  # W&B groups runs by sweep
    best = min(runs, key=lambda r: r["value"])
    status = lab.run("lbm", "sweep", "status", "g")
    assert status.returncode == 0 and "6 of 6 runs" in status.stdout
    assert f"best: run {best['number']} " in status.stdout and best["artifact_uri"] in status.stdout


def test_two_agents_and_four_runs_make_four_runs_never_more_than_two_at_once(lab: Lab):
    done = run_sweep(
        lab, write_sweep(lab, "r.yaml", RANDOM), "--max-runs", "4", "--max-agents", "2", "--name", "r"
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr
    launched = jobs(lab)
    assert len(sweep_runs("r")) == 4 and len(launched) == 4
    assert all(j.state is JobState.SUCCEEDED for j in launched)
    assert most_at_once(launched) == 2  # the queue could run 3


def test_a_run_that_fails_counts_as_failed_not_as_a_value(lab: Lab):
    # A task the dataset does not have (a well-formed list, so only the job can tell): that job fails.
    tasks = {"tasks": {"values": [None, ["no_such_task"]]}}
    sweep = {
        "method": "grid",
        "metric": {"name": "val_loss"},
        "parameters": {"task": {"parameters": {"dataset": {"parameters": tasks}}}},
    }
    done = run_sweep(lab, write_sweep(lab, "f.yaml", sweep), "--max-agents", "2", "--name", "f")

    assert done.returncode == 0, done.stdout + done.stderr
    runs = {json.dumps(r["parameters"]["task.dataset.tasks"]): r for r in sweep_runs("f")}
    assert runs["null"]["state"] == "succeeded" and runs["null"]["value"] is not None
    failed = runs['["no_such_task"]']
    assert failed["state"] == "failed" and failed["value"] is None and "FAILED" in failed["reason"]
    status = lab.run("lbm", "sweep", "status", "f", "--json")
    assert json.loads(status.stdout)["best"]["number"] == runs["null"]["number"]


def test_a_controller_killed_mid_sweep_is_resumed_to_the_right_count_without_duplicates(lab: Lab):
    name = write_sweep(lab, "k.yaml", RANDOM)
    started = subprocess.run(
        sweep_args(name, "--max-runs", "3", "--name", "k", "--detach"),
        env=lab.env,
        cwd=lab.root / "work",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(re.search(r"controller: pid (\d+)", started.stdout).group(1))
    second = wait_for(
        lambda: next((r for r in sweep_runs("k") if r["number"] == 1 and r["job"]), None), "run 1's job"
    )
    lab.wait_state(second["job"], [JobState.RUNNING])

    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
        "the controller to die",
    )
    resumed = lab.run("lbm", "sweep", "resume", "k", timeout=600)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"watching job {second['job']} again" in resumed.stdout
    runs = sweep_runs("k")
    sweep = parse_sweep(RANDOM, "t")
    assert [r["parameters"] for r in runs] == [draw_point(sweep, 0, n) for n in range(3)]
    assert [r["state"] for r in runs] == ["succeeded"] * 3
    assert sorted(j.name for j in jobs(lab)) == sorted(r["job"] for r in runs)  # one job per run


def test_a_controller_killed_between_queuing_a_job_and_recording_it_makes_no_second_job(lab: Lab):
    name = write_sweep(lab, "q.yaml", RANDOM)
    # The controller kills itself (SIGKILL) right after its second run's job is queued.
    env = {**lab.env, "LBM_SWEEP_CRASH_AT": "job-submitted:2"}
    killed = subprocess.run(
        sweep_args(name, "--max-runs", "3", "--max-agents", "2", "--name", "q"),
        env=env,
        cwd=lab.root / "work",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    second_job = sweep_runs("q")[1]["job"]
    assert second_job in {j.name for j in jobs(lab)}  # queued, though the controller never said so

    resumed = lab.run("lbm", "sweep", "resume", "q", timeout=600)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"watching job {second_job} again" in resumed.stdout
    runs = sweep_runs("q")
    assert [r["state"] for r in runs] == ["succeeded"] * 3
    assert sorted(j.name for j in jobs(lab)) == sorted(r["job"] for r in runs)  # one job per run


def test_stop_ends_the_running_job_and_the_controller(lab: Lab):
    name = write_sweep(lab, "s.yaml", RANDOM)
    controller = subprocess.Popen(
        sweep_args(name, "--max-runs", "5", "--name", "s"),
        env=lab.env,
        cwd=lab.root / "work",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for((sweep_folder(lab) / "s" / "sweep.json").exists, "the sweep's record")
    first = wait_for(lambda: next((r for r in sweep_runs("s") if r["job"]), None), "the first run's job")
    lab.wait_state(first["job"], [JobState.RUNNING])

    stopped = lab.run("lbm", "sweep", "stop", "s")

    assert stopped.returncode == 0, stopped.stderr
    assert controller.wait(timeout=120) == 0
    assert lab.wait_state(first["job"], [JobState.FAILED, JobState.SUCCEEDED]).state is JobState.FAILED
    status = lab.run("lbm", "sweep", "status", "s", "--json")
    assert '"state": "stopped"' in status.stdout
    assert len(jobs(lab)) == 1


def test_two_controllers_on_one_postgresql_study_share_the_run_cap(lab: Lab, postgres_url: str):
    name = write_sweep(lab, "p.yaml", RANDOM)
    args = sweep_args(name, "--max-runs", "3", "--max-agents", "2", "--name", "p", "--storage", postgres_url)
    controllers = [
        subprocess.Popen(
            args,
            env=lab.env,
            cwd=lab.root / "work",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [c.communicate(timeout=600)[0] for c in controllers]

    assert [c.returncode for c in controllers] == [0, 0], outputs
    runs = sweep_runs("p")
    assert len(runs) == 3 and len(jobs(lab)) == 3
    assert [r["parameters"] for r in runs] == [draw_point(parse_sweep(RANDOM, "t"), 0, n) for n in range(3)]
    assert [r["state"] for r in runs] == ["succeeded"] * 3
    assert "postgresql" in lab.run("lbm", "sweep", "status", "p", "--json").stdout
