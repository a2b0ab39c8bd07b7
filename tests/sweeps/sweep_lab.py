"""Helpers for sweeps of real tiny jobs on a lab machine: sweep files in ./sweep/, `lbm sweep` processes,
and what the study and the backend hold afterwards."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from e2e.e2e_lab import BIN, TINY, Lab, overrides
from lbm.jobs.model import Job
from lbm.sweeps.record import SweepRecord

# Two optimizer steps of the tiny config, validated at the second (so val_loss is logged).
RUN_OVERRIDES = overrides(2, "training.val_per_step=true", "training.val_every=2")
TIMEOUT_S = 600


def write_sweep(lab: Lab, name: str, sweep: dict[str, Any]) -> str:
    """Write ./sweep/<name> in the lab's working directory; its name for --sweep-config-file."""
    folder = lab.root / "work" / "sweep"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(sweep))
    return name


def sweep_args(sweep_file: str, *more: str) -> list[str]:
    return [
        str(BIN / "lbm"),
        "sweep",
        "--config-file",
        TINY,
        "--config-overrides",
        RUN_OVERRIDES,
        "--sweep-config-file",
        sweep_file,
        *more,
    ]


def run_sweep(
    lab: Lab, sweep_file: str, *more: str, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess:
    """`lbm sweep` on the tiny config, to its end."""
    return subprocess.run(
        sweep_args(sweep_file, *more),
        env=lab.env,
        cwd=lab.root / "work",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sweep_runs(name: str) -> list[dict[str, Any]]:
    """The sweep's runs as `lbm sweep status --json` reports them."""
    from lbm.sweeps.status import sweep_status

    record = SweepRecord.load(name)
    study, settings = record.study()
    return sweep_status(record, study, settings)["runs"]


def jobs(lab: Lab) -> list[Job]:
    """Every job the backend has, oldest first."""
    return sorted(lab.backend.list(), key=lambda job: job.created_at)


def resolved(job: Job) -> dict[str, Any]:
    return yaml.safe_load(job.spec.resolved_config)


def most_at_once(jobs: list[Job]) -> int:
    """The most jobs that ran at the same time (from their start and stop times)."""
    events = sorted([(j.started_at, 1) for j in jobs] + [(j.stopped_at, -1) for j in jobs])
    now = most = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def sweep_folder(lab: Lab) -> Path:
    return Path(lab.env["LBM_HOME"]) / "sweeps"
