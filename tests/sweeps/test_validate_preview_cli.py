"""`lbm sweep validate` and `lbm sweep preview` as users run them: the real command, its output and status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LBM = str(Path(sys.executable).with_name("lbm"))


def lbm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LBM, "sweep", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_validate_a_shipped_example(tmp_path):
    done = lbm("validate", "example_sweep_conditional.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "valid grid sweep of 1 parameter(s), 2 grid points" in done.stdout


def test_an_invalid_file_gets_one_line_and_status_2(tmp_path):
    (tmp_path / "bad.yaml").write_text("method: grid\nparameters:\n  lr: {min: 0.1, max: 0.2}\n")
    done = lbm("validate", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "parameters.lr" in done.stderr and "grid" in done.stderr
    assert "Traceback" not in done.stderr


def test_preview_of_a_grid_lists_every_point_with_dotted_keys(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "g.yaml").write_text(
        "method: grid\nparameters:\n  optimizer:\n    parameters:\n      lr: {values: [0.1, 0.01, 0.1]}\n"
        "  dataloader:\n    parameters:\n      batch_size: {min: 1, max: 2}\n"
    )
    done = lbm("preview", "g.yaml", "--runs", "10", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    points = json.loads(done.stdout)
    assert points == [
        {"optimizer.lr": 0.1, "dataloader.batch_size": 1},
        {"optimizer.lr": 0.1, "dataloader.batch_size": 2},
        {"optimizer.lr": 0.01, "dataloader.batch_size": 1},
        {"optimizer.lr": 0.01, "dataloader.batch_size": 2},
    ]


def test_preview_of_random_depends_on_the_seed_only(tmp_path):
    first = lbm("preview", "example_sweep_combined.yaml", "--runs", "3", "--seed", "4", cwd=tmp_path)
    again = lbm("preview", "example_sweep_combined.yaml", "--runs", "3", "--seed", "4", cwd=tmp_path)
    other = lbm("preview", "example_sweep_combined.yaml", "--runs", "3", "--seed", "5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout != other.stdout
    assert first.stdout.splitlines()[0].startswith("run 0: conditional=")
    assert "training.lr_warmup_steps=" in first.stdout


@pytest.mark.parametrize("runs", ["0", "-1"])
def test_preview_needs_at_least_one_run(tmp_path, runs):
    done = lbm("preview", "example_sweep.yaml", "--runs", runs, cwd=tmp_path)
    assert done.returncode == 2 and "--runs" in done.stderr
