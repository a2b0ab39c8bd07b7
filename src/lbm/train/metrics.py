"""Training metrics: one JSON object per logged step in `metrics.jsonl`, the same as one stdout line.

The stdout line is stable for log scrapers, e.g.
`[metrics] step=120 epoch=3 train_loss=0.0412 val_loss=0.0535 lr=1.000e-04 samples_per_s=45.1`
(regex: `^\\[metrics\\] (?:(\\w+)=(\\S+) ?)+$`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

FIELD_ORDER = (
    "step",
    "epoch",
    "train_loss",
    "val_loss",
    "val_action_mse",
    "lr",
    "samples_per_s",
    "data_wait_frac",
)


def format_line(record: dict[str, Any]) -> str:
    """The record as a `[metrics] key=value ...` line, known fields first."""
    keys = [k for k in FIELD_ORDER if k in record] + sorted(k for k in record if k not in FIELD_ORDER)
    parts = []
    for key in keys:
        value = record[key]
        if isinstance(value, float):
            value = f"{value:.6g}" if key != "lr" else f"{value:.3e}"
        parts.append(f"{key}={value}")
    return "[metrics] " + " ".join(parts)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file; a torn last line (crash mid-write) is ignored."""
    records = []
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class MetricsLog:
    """Appends records to metrics.jsonl, prints them, and forwards them to W&B when a run is open."""

    def __init__(self, path: Path, wandb_run: Any | None = None):
        self.path = path
        self.wandb_run = wandb_run

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written by a run that died after its last checkpoint)."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(partial, self.path)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(format_line(record), file=sys.stdout, flush=True)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
