"""`SageMakerBackend`: AWS Batch service jobs that start SageMaker training jobs."""

from __future__ import annotations

from typing import Any

from lbm.errors import LbmError
from lbm.jobs.region import Region


class SageMakerBackend:
    """The regions of a site whose backend is `sagemaker` (its AWS calls are not in this version yet)."""

    RegionSettings = None
    QueueSettings = None

    def __init__(self, region: Region):
        self.region = region

    def __getattr__(self, name: str) -> Any:
        raise LbmError(f"backend 'sagemaker' is not available in this version (region {self.region.name})")
