"""A sweep's parameter values as Hydra overrides (`optimizer.lr=0.0003`), and the training config's keys
they must name."""

from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING, Any

from lbm.errors import LbmError
from lbm.launch.overrides import quoted
from lbm.sweeps.sweep_file import CONDITIONAL

if TYPE_CHECKING:
    from omegaconf import DictConfig


def hydra_value(value: Any) -> str:
    """`value` in Hydra's override grammar (strings quoted, lists and mappings in brackets)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            repr(value)
            if math.isfinite(value)
            else ("nan" if math.isnan(value) else f"{'-' * (value < 0)}inf")
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return quoted(str(value))


def parameter_overrides(parameters: dict[str, Any]) -> list[str]:
    """The overrides that set a run's parameters (`conditional` is not a config key: left out)."""
    return [f"{key}={hydra_value(value)}" for key, value in parameters.items() if key != CONDITIONAL]


def check_keys(keys: list[str], config: DictConfig, config_name: str) -> None:
    """LbmError for the first swept key that names no key of the training config."""
    from omegaconf import OmegaConf

    missing = object()
    for key in keys:
        if key == CONDITIONAL:
            continue
        if OmegaConf.select(config, key, default=missing) is missing:
            close = difflib.get_close_matches(key, list(_dotted_keys(config)), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise LbmError(
                f"sweep parameter {key} names no key of training config {config_name!r}{hint} "
                "(nested parameters need a `parameters` key at each level)"
            )


def _dotted_keys(node: Any, prefix: str = ""):
    from omegaconf import DictConfig

    if isinstance(node, DictConfig):
        for key in node:
            yield f"{prefix}{key}"
            yield from _dotted_keys(node.get(key), f"{prefix}{key}.")
