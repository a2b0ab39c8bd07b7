"""The artifact tree, `<bucket>/<prefix>/<owner>-lbm/<job-name>/` (single task: `<owner>-single-task`), and
the names of the files every job writes there."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from lbm.errors import LbmError

if TYPE_CHECKING:
    from lbm.jobs.region import Region

ARCHIVE_NAME = "output/output.tar.gz"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"


def artifact_uri(region: Region, owner: str, job_name: str, task_name: str | None = None) -> str:
    """Where a job's checkpoints, config, metrics and output archive go (ends with '/')."""
    kind = "single-task" if task_name else "lbm"
    parts = [region.bucket.rstrip("/"), region.prefix.strip("/"), f"{owner}-{kind}", job_name]
    return "/".join(p for p in parts if p) + "/"


def config_uri(artifact: str) -> str:
    """The job's resolved training config, which the launcher writes and the job trains from."""
    return f"{artifact.rstrip('/')}/{CONFIG_FILE}"


def archive_uri(artifact: str) -> str:
    """The job's end-of-run archive: `<artifact>/output/output.tar.gz`."""
    return f"{artifact.rstrip('/')}/{ARCHIVE_NAME}"


def check_writable(url: str) -> None:
    """Write and delete a small probe object under `url`; LbmError when that fails."""
    import fsspec

    probe = f"{url.rstrip('/')}/.lbm-write-check-{uuid.uuid4().hex}"
    try:
        fs, path = fsspec.core.url_to_fs(probe)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, b"lbm")
        fs.rm_file(path)
    except Exception as error:  # noqa: BLE001 - any storage failure means "not writable"
        reason = " ".join(str(error).split()) or type(error).__name__
        raise LbmError(f"bucket {url} is not writable: {reason}") from None
