"""Hyperband as W&B defines it: the band thresholds over all runs' histories, and a real lagging run stopped
through the backend at a milestone."""

from __future__ import annotations

import pytest
from sweep_lab import jobs, run_sweep, sweep_runs, write_sweep

from e2e.e2e_lab import Lab
from lbm.jobs.model import JobState
from lbm.sweeps.hyperband import runs_to_stop
from lbm.sweeps.job_metrics import metric_history
from lbm.sweeps.sweep_file import Hyperband


def test_wandbs_example_stops_the_run_behind_its_band():
    # W&B's own example: max_iter 5, s 2, eta 2 -> milestones 1 and 2. At milestone 2 the runs logged
    # 9, 10, 8, 7, 6: the threshold is sorted(...)[int(5 / 2)] = 8, and only b (10) is behind it.
    histories = {0: [10, 9], 1: [10, 10], 2: [10, 8, 8], 3: [10, 7, 7], 4: [10, 6, 6]}
    hyperband = Hyperband(bands=(1, 2), eta=2.0, strict=True)
    assert set(runs_to_stop(hyperband, histories, running={1, 2, 3}, maximize=False)) == {1}


def test_strict_compares_the_value_at_the_milestone_and_lenient_the_best_so_far():
    histories = {0: [5, 1], 1: [5, 2], 2: [1, 3]}
    assert set(runs_to_stop(Hyperband((2,), 3.0, True), histories, {2}, False)) == {2}  # 3 > 2
    assert runs_to_stop(Hyperband((2,), 3.0, False), histories, {2}, False) == {}  # best 1 <= 2


def test_maximize_turns_the_comparison_round():
    histories = {0: [0.9], 1: [0.8], 2: [0.1]}
    assert set(runs_to_stop(Hyperband((1,), 3.0, True), histories, {0, 1, 2}, maximize=True)) == {2}


STEPS = 20
# The metric is the learning rate each run logs: its order across runs is known at every step (a loss this
# early is noise), so the run that lags at each milestone is known: the one with the largest lr.
LAGGING = {
    "method": "grid",
    "metric": {"name": "lr", "goal": "minimize"},
    "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2},
    "parameters": {"optimizer": {"parameters": {"lr": {"values": [0.001, 0.002, 0.01]}}}},
}


@pytest.mark.slow
def test_hyperband_stops_a_lagging_run_through_the_backend(lab: Lab):
    done = run_sweep(
        lab,
        write_sweep(lab, "h.yaml", LAGGING),
        "--config-overrides",
        f"task.synthesize.episodes_per_task=4,dataloader.batch_size=16,dataloader.num_workers=0,"
        f"training.log_every=2,training.max_train_steps={STEPS},training.lr_warmup_steps=0,"
        "checkpoint.every_n_steps=1000",
        "--max-agents",
        "3",
        "--name",
        "h",
    )

    assert done.returncode == 0, done.stdout + done.stderr
    runs = {r["parameters"]["optimizer.lr"]: r for r in sweep_runs("h")}
    assert runs[0.001]["state"] == runs[0.002]["state"] == "succeeded"
    lagging = runs[0.01]
    assert lagging["state"] == "stopped early" and "hyperband" in lagging["reason"]
    job = next(j for j in jobs(lab) if j.name == lagging["job"])
    assert job.state is JobState.FAILED and "hyperband" in job.status_reason
    logged = metric_history(job.artifact_uri, "step")
    assert logged and logged[-1] < STEPS  # stopped before its last step
