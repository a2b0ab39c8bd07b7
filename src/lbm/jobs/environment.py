"""The environment every backend gives a job's process: where it writes, where its artifacts and config are,
its name and attempt. `lbm train` reads the same names."""

from __future__ import annotations

import os

from lbm.jobs.model import JobSpec
from lbm.storage.layout import config_uri

JOB_NAME = "LBM_JOB_NAME"
ATTEMPT = "LBM_ATTEMPT"
OUTPUT_DIR = "LBM_OUTPUT_DIR"
ARTIFACT_URI = "LBM_ARTIFACT_URI"
CONFIG_URI = "LBM_CONFIG_URI"


def job_environment(spec: JobSpec, *, attempt: int, output_dir: str | os.PathLike) -> dict[str, str]:
    """The variables of one attempt of `spec` (its own `env` included; secrets are the backend's to add).

    A job reads no `~/.netrc` (NETRC=/dev/null): its W&B key is the one its submitter gave it.
    """
    return {
        **spec.env,
        JOB_NAME: spec.name,
        ATTEMPT: str(attempt),
        OUTPUT_DIR: str(output_dir),
        ARTIFACT_URI: spec.artifact_uri,
        CONFIG_URI: config_uri(spec.artifact_uri),
        "NETRC": os.devnull,
        "PYTHONUNBUFFERED": "1",
    }
