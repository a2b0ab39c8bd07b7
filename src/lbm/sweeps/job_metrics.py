"""A run's metric, read from the `metrics.jsonl` its job writes to its artifact folder."""

from __future__ import annotations

import json
import math

from lbm.storage.layout import METRICS_FILE


def metric_history(artifact_uri: str, name: str) -> list[float]:
    """The values of metric `name` in the order the job logged them (none yet: empty); a torn last line
    (a job writing it now) is skipped."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(f"{artifact_uri.rstrip('/')}/{METRICS_FILE}")
    try:
        text = fs.cat_file(path).decode()
    except FileNotFoundError:
        return []
    values = []
    for line in text.splitlines():
        try:
            value = json.loads(line).get(name)
        except (ValueError, AttributeError):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
    return values
