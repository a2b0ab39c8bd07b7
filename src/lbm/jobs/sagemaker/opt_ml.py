"""The `/opt/ml` tree of a SageMaker training container: what SageMaker gives the job and what it collects.

The root is `$LBM_SAGEMAKER_ROOT` when set (a tree made for a test), else `/opt/ml`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lbm.errors import LbmError

ROOT_ENV = "LBM_SAGEMAKER_ROOT"


@dataclass(frozen=True)
class Hosts:
    """The hosts of the job (`resourceconfig.json`), in SageMaker's order, and which one this is."""

    hosts: tuple[str, ...]
    current: str
    network_interface: str | None = None

    @property
    def first(self) -> str:
        return self.hosts[0]

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current)


@dataclass(frozen=True)
class OptMl:
    root: Path

    @classmethod
    def from_env(cls) -> OptMl:
        return cls(Path(os.environ.get(ROOT_ENV) or "/opt/ml"))

    @property
    def hyperparameters_file(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def resource_config_file(self) -> Path:
        return self.root / "input" / "config" / "resourceconfig.json"

    @property
    def checkpoints(self) -> Path:
        """Synced with the job's S3 folder while it runs; restored from it on a retry."""
        return self.root / "checkpoints"

    @property
    def attempts_file(self) -> Path:
        """How many attempts of the job have started (written by the first host, restored on a retry)."""
        return self.checkpoints / "lbm-attempts"

    @property
    def output_data(self) -> Path:
        """Packed by SageMaker into `output/output.tar.gz` when the job ends."""
        return self.root / "output" / "data"

    @property
    def model(self) -> Path:
        """Packed by SageMaker into `output/model.tar.gz` when the job succeeds."""
        return self.root / "model"

    @property
    def failure_file(self) -> Path:
        """Its text becomes the training job's FailureReason."""
        return self.root / "output" / "failure"

    def hyperparameters(self) -> dict[str, str]:
        """The job's hyperparameters as SageMaker wrote them (every value a string)."""
        values = _read_json(self.hyperparameters_file)
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise LbmError(f"{self.hyperparameters_file} is not an object of string values")
        return values

    def hosts(self) -> Hosts:
        config = _read_json(self.resource_config_file)
        hosts = config.get("hosts") if isinstance(config, dict) else None
        current = config.get("current_host") if isinstance(config, dict) else None
        if not hosts or not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise LbmError(f"{self.resource_config_file}: 'hosts' must be a non-empty list of host names")
        if current not in hosts:
            raise LbmError(f"{self.resource_config_file}: current_host {current!r} is not one of {hosts}")
        if len(set(hosts)) != len(hosts):
            raise LbmError(f"{self.resource_config_file}: 'hosts' names a host twice: {hosts}")
        return Hosts(tuple(hosts), current, config.get("network_interface_name") or None)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LbmError(f"{path} is missing: is this a SageMaker training container?") from None
    except (OSError, ValueError) as error:
        raise LbmError(f"cannot read {path}: {error}") from None
