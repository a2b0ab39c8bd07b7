"""Conditional config files: `conditional: <value>` names `./sweep/config/conditional/<value>.yaml`, merged
over the run's resolved training config (a node whose `_target_` changes is replaced, not merged)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbm.errors import LbmError
from lbm.sweeps.overrides import hydra_value
from lbm.sweeps.sweep_file import CONDITIONAL, SWEEP_DIR, SweepFile, example_path

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONDITIONAL_DIR = SWEEP_DIR / "config" / "conditional"


def conditional_names(sweep: SweepFile) -> list[str]:
    """The conditional files the sweep names."""
    parameter = sweep.parameters.get(CONDITIONAL)
    if parameter is None:
        return []
    return [parameter["value"]] if parameter.distribution == "constant" else list(parameter["values"])


def read_conditional_files(sweep: SweepFile) -> dict[str, dict[str, Any]]:
    """Name -> contents of each conditional file the sweep names: in ./sweep/config/conditional, else
    among the shipped examples; LbmError for one that is missing or not a mapping."""
    import yaml

    files = {}
    for name in conditional_names(sweep):
        local, shipped = (
            CONDITIONAL_DIR / f"{name}.yaml",
            example_path("config", "conditional", f"{name}.yaml"),
        )
        path = local if local.is_file() else shipped if shipped.is_file() else None
        if path is None:
            raise LbmError(
                f"conditional value {name!r} names no file: expected {local} (in the directory you run from)"
            )
        try:
            data = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as error:
            raise LbmError(
                f"conditional file {path}: cannot read it as YAML: {' '.join(str(error).split())}"
            ) from None
        if not isinstance(data, dict) or not data:
            raise LbmError(
                f"conditional file {path}: must be a mapping of config keys (the training config's structure)"
            )
        files[name] = data
    return files


def conditional_overrides(config: DictConfig, addon: dict[str, Any]) -> list[str]:
    """Hydra overrides that merge `addon` over `config`: each leaf set (`++`), and, where a node's
    `_target_` changes, the old node removed first (`~`)."""
    from omegaconf import DictConfig

    from lbm.train.legacy_targets import LEGACY_TARGETS

    overrides: list[str] = []

    def walk(node: Any, part: dict[str, Any], prefix: str) -> None:
        for key, value in part.items():
            path = f"{prefix}{key}"
            old = node.get(key) if isinstance(node, DictConfig) else None
            if not isinstance(value, dict):
                overrides.append(f"++{path}={hydra_value(value)}")
                continue
            if isinstance(old, DictConfig) and "_target_" in value:
                target = LEGACY_TARGETS.get(value["_target_"], value["_target_"])
                if target != old.get("_target_"):
                    overrides.append(f"~{path}")
                    old = None
            walk(old, value, f"{path}.")

    walk(config, addon, "")
    return overrides
