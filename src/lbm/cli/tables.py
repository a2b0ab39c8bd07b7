"""Printing for sagey and batchy: rich tables for people, JSON (`--json`) for scripts, job fields as text."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from lbm.jobs.model import Job

# rich lays a table out to fit the terminal at about 2 ms a row; longer tables, and tables written to a pipe
# or file, are printed as plain aligned columns (a fraction of a millisecond for 10,000 rows).
RICH_MAX_ROWS = 500
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A table on stdout, columns two spaces apart; `-` for missing values."""
    cells = [["-" if value is None else str(value) for value in row] for row in rows]
    if not (sys.stdout.isatty() and len(cells) <= RICH_MAX_ROWS):
        widths = [max(map(len, column)) for column in zip(columns, *cells, strict=True)]
        lines = [title] if title else []
        lines += ["  ".join(map(str.ljust, row, widths)).rstrip() for row in (columns, *cells)]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in ("JOB", "QUEUE", "NAME"), overflow="fold")
    for row in cells:
        table.add_row(*row)
    Console(highlight=False).print(table)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def clock(timestamp: float | None) -> str | None:
    """`YYYY-MM-DD HH:MM:SS` in local time."""
    return None if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def duration(seconds: float | None) -> str | None:
    """`1d 02:03:04`, `02:03:04` or `03:04`."""
    if seconds is None:
        return None
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}" if hours or days else f"{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text


def runtime(job: Job, now: float | None = None) -> float | None:
    """Seconds the job has run (so far, while it runs)."""
    if job.started_at is None:
        return None
    return (job.stopped_at or (now if now is not None else time.time())) - job.started_at


def job_record(job: Job) -> dict[str, Any]:
    """A job as JSON-able data (the JobSpec fields, state, reason, timestamps and attempts)."""
    import dataclasses

    record = {
        "name": job.name,
        "state": job.state.value,
        "status_reason": job.status_reason,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "stopped_at": job.stopped_at,
        **{k: v for k, v in dataclasses.asdict(job.spec).items() if k != "name"},
        "attempts": [dataclasses.asdict(attempt) for attempt in job.attempts],
        "engine_id": job.engine_id,
        "transitions": [{"state": state.value, "at": at} for state, at in job.transitions],
    }
    record["command"] = list(job.spec.command)
    return record


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """`values` as one line of block characters, at most `width` wide (averaged into buckets)."""
    if not values:
        return ""
    buckets = min(width, len(values))
    means = []
    for index in range(buckets):
        chunk = values[index * len(values) // buckets : (index + 1) * len(values) // buckets]
        means.append(sum(chunk) / len(chunk))
    low, high = min(means), max(means)
    span = (high - low) or 1.0
    return "".join(SPARK_BLOCKS[round((v - low) / span * (len(SPARK_BLOCKS) - 1))] for v in means)
