"""The backends, by the name a site region gives (`backend: slurm`), and what each can do.

A backend is one folder `lbm/jobs/<name>/` plus one entry here; its class is imported on first use, so
listing the registry costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lbm.errors import LbmError

if TYPE_CHECKING:
    from lbm.jobs.backend import Backend
    from lbm.jobs.region import Region


@dataclass(frozen=True)
class BackendInfo:
    """One backend: where its class is and what it can do.

    `multi_node`: runs one job on several machines (`--instance-count` above 1); `own_scheduler`: the engine
    orders the queue (AWS Batch, Slurm) rather than lbm's fair-share agent; `poll_interval_s`: how often a
    caller may ask for a job's state (a local store takes 20 ms; AWS wants seconds); `commands`: `lbm`
    subcommands of its own, name -> (module with `main(argv)`, help).
    """

    name: str
    target: str
    multi_node: bool
    own_scheduler: bool
    poll_interval_s: float
    commands: dict[str, tuple[str, str]] = field(default_factory=dict)

    def load(self) -> type[Backend]:
        """The backend class (`module:Class` of `target`)."""
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


REGISTRY: dict[str, BackendInfo] = {
    "local": BackendInfo(
        "local",
        "lbm.jobs.local.backend:LocalBackend",
        multi_node=False,
        own_scheduler=False,
        poll_interval_s=0.02,
    ),
    "sagemaker": BackendInfo(
        "sagemaker",
        "lbm.jobs.sagemaker.backend:SageMakerBackend",
        multi_node=True,
        own_scheduler=True,
        poll_interval_s=5.0,
        commands={
            "sagemaker-entrypoint": (
                "lbm.jobs.sagemaker.entrypoint",
                "the SageMaker training image's entry point: lbm train across the job's hosts",
            )
        },
    ),
    "slurm": BackendInfo(
        "slurm",
        "lbm.jobs.slurm.backend:SlurmBackend",
        multi_node=True,
        own_scheduler=True,
        poll_interval_s=1.0,
    ),
}


def backend_info(name: str) -> BackendInfo:
    """The registry entry for `name`; LbmError naming the known backends when there is none."""
    if name not in REGISTRY:
        raise LbmError(f"unknown backend {name!r}; known backends: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def backend_for(region: Region) -> Backend:
    """The backend serving `region`."""
    return backend_info(region.backend).load()(region)
