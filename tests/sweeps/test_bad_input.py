"""Bad input to `lbm sweep` gets one line and exit status 2, and nothing is launched or written; --dry-run
checks everything and prints the first runs' overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_lab import run_sweep, sweep_folder, write_sweep

from e2e.e2e_lab import Lab

LR = {"optimizer": {"parameters": {"lr": {"values": [0.001, 0.01]}}}}


def nothing_written(lab: Lab) -> bool:
    return not (Path(lab.env["LBM_HOME"]) / "jobs.sqlite").exists() and not sweep_folder(lab).exists()


@pytest.mark.parametrize(
    ("sweep", "args", "message"),
    [
        (
            {"method": "grid", "parameters": {"optimizer": {"parameters": {"lr": {"min": 0.1, "max": 0.2}}}}},
            [],
            "parameters.optimizer.parameters.lr: grid search cannot enumerate",
        ),
        (
            {"method": "grid", "parameters": {"conditional": {"values": ["no_such_file"]}}},
            [],
            "conditional value 'no_such_file' names no file",
        ),
        (
            {"method": "grid", "parameters": {"optimizer": {"parameters": {"lrr": {"values": [0.1]}}}}},
            [],
            "sweep parameter optimizer.lrr names no key of training config",
        ),
        (
            {"method": "grid", "parameters": {"optimizer": {"parameters": {"lrr": {"values": [0.1]}}}}},
            ["--dry-run"],
            "did you mean optimizer.lr?",
        ),
        ({"method": "grid", "parameters": LR}, ["--max-runs", "0"], "--max-runs must be 1 or more"),
        ({"method": "grid", "parameters": LR}, ["--max-agents", "0"], "--max-agents must be 1 or more"),
        (
            {
                "method": "grid",
                "parameters": {"dataloader": {"parameters": {"batch_size": {"values": ["big"]}}}},
            },
            [],
            "dataloader.batch_size='big' is not valid",
        ),
    ],
)
def test_bad_input_gets_one_line_exit_2_and_nothing_launched(lab: Lab, sweep, args, message):
    done = run_sweep(lab, write_sweep(lab, "bad.yaml", sweep), *args, timeout=120)

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert nothing_written(lab)


def test_a_missing_sweep_file_gets_one_line(lab: Lab):
    done = run_sweep(lab, "nope.yaml", timeout=120)
    assert done.returncode == 2 and "sweep file nope.yaml is neither" in done.stderr
    assert nothing_written(lab)


def dry_run(lab: Lab, *args: str):
    return run_sweep(
        lab,
        write_sweep(lab, "lr.yaml", {"method": "grid", "parameters": LR}),
        "--dry-run",
        *args,
        timeout=120,
    )


def test_dry_run_prints_the_first_runs_overrides_and_launches_nothing(lab: Lab):
    done = dry_run(lab, "--name", "d")

    assert done.returncode == 0, done.stderr
    assert "would make 2 run(s)" in done.stdout
    lines = done.stdout.splitlines()
    assert "run 0: optimizer.lr=0.001" in lines and "run 1: optimizer.lr=0.01" in lines
    overrides = [line for line in lines if line.strip().startswith("overrides:")]
    assert len(overrides) == 2 and "optimizer.lr=0.01" in overrides[1]
    assert "++logging.group='d'" in overrides[0]
    assert nothing_written(lab)


def test_max_runs_that_do_not_divide_by_the_agents_warn(lab: Lab):
    done = dry_run(lab, "--max-runs", "3", "--max-agents", "2")
    assert done.returncode == 0 and "does not divide" in done.stderr
