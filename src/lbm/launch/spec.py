"""LaunchSpec: what a user asks `lbm launch` for, from a launcher file and flags (flags win)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbm.errors import LbmError
from lbm.launch.overrides import check_override, merge_overrides, quoted, split_overrides

DEFAULT_CONFIG = "train_diffusion_unet_clip_lang_stage_base"
MAX_PRIORITY = 9999
MAX_RETRIES = 9


@dataclass(frozen=True)
class LaunchSpec:
    """The settings of one launch; each field is also a launcher-file key (`config_file` or `config-file`)."""

    config_file: str | None = None  # None: DEFAULT_CONFIG, which `plan` says in a note
    config_dir: str | None = None
    config_overrides: tuple[str, ...] = ()
    num_epochs: int | None = None
    batch_size: int | None = None
    task_name: str | None = None
    image_uri: str | None = None
    instance_type: str | None = None
    instance_count: int = 1
    region: str | None = None
    queue: str | None = None
    team: str | None = None
    priority: int = 0
    max_days: float | None = None
    retries: int = 0
    nproc_per_node: int = 1

    def __post_init__(self) -> None:
        _at_least("num-epochs", self.num_epochs, 1)
        _at_least("batch-size", self.batch_size, 1)
        _at_least("instance-count", self.instance_count, 1)
        _at_least("nproc-per-node", self.nproc_per_node, 1)
        if not 0 <= self.priority <= MAX_PRIORITY:
            raise LbmError(f"--priority must be from 0 to {MAX_PRIORITY}, got {self.priority}")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise LbmError(f"--retries must be from 0 to {MAX_RETRIES}, got {self.retries}")
        if self.max_days is not None and not (math.isfinite(self.max_days) and self.max_days > 0):
            raise LbmError(f"--max-days must be a number of days above 0, got {self.max_days}")
        for name in ("config_file", "task_name", "image_uri", "instance_type", "region", "queue", "team"):
            if getattr(self, name) == "":
                raise LbmError(f"--{name.replace('_', '-')} must not be empty")

    def flag_overrides(self) -> list[str]:
        """The training-config overrides the flags stand for (num-epochs, batch-size, task-name)."""
        overrides = []
        if self.num_epochs is not None:
            overrides.append(f"training.num_epochs={self.num_epochs}")
        if self.batch_size is not None:
            overrides.append(f"dataloader.batch_size={self.batch_size}")
        if self.task_name is not None:
            overrides.append(f"task.dataset.tasks=[{quoted(self.task_name)}]")
        return merge_overrides(self.config_overrides, overrides)

    @property
    def max_runtime_s(self) -> float | None:
        return None if self.max_days is None else self.max_days * 86400.0


def _at_least(flag: str, value: int | None, least: int) -> None:
    if value is not None and value < least:
        raise LbmError(f"--{flag} must be {least} or more, got {value}")


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(LaunchSpec)}
# The settings a launcher file may hold; each is also a flag of `lbm launch` (`config_file` is --config-file).
SETTINGS = tuple(_FIELD_TYPES)


def launch_spec(file_settings: Mapping[str, Any], flag_settings: Mapping[str, Any]) -> LaunchSpec:
    """A LaunchSpec from launcher-file settings overridden by the flags that were given (not None)."""
    settings = dict(file_settings)
    flags = {k: v for k, v in flag_settings.items() if v is not None}
    overrides = merge_overrides(settings.pop("config_overrides", ()), flags.pop("config_overrides", ()))
    return LaunchSpec(**{**settings, **flags, "config_overrides": tuple(overrides)})


def read_launcher_file(path: str | Path) -> dict[str, Any]:
    """The settings in a launcher YAML file, checked against LaunchSpec's fields and types."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LbmError(f"launcher file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as error:
        raise LbmError(
            f"launcher file {path}: cannot read it as YAML: {' '.join(str(error).split())}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LbmError(f"launcher file {path}: must be a mapping of settings, got {type(data).__name__}")
    settings = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(key for key in settings if key not in _FIELD_TYPES)
    if unknown:
        raise LbmError(
            f"launcher file {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SETTINGS)}"
        )
    for key, value in settings.items():
        settings[key] = _checked(path, key, value)
    if settings.get("config_dir"):
        settings["config_dir"] = str((path.parent / settings["config_dir"]).absolute())
    return settings


def _checked(path: Path, key: str, value: Any) -> Any:
    kind = _FIELD_TYPES[key]
    if key == "config_overrides":
        if isinstance(value, str):
            return tuple(split_overrides(value))
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            for item in value:
                check_override(item)
            return tuple(value)
        raise LbmError(
            f"launcher file {path}: config_overrides must be a string 'a=1,b=2' or a list of strings"
        )
    if value is None and "None" in kind:
        return None
    if "int" in kind and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "float" in kind and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if "str" in kind and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    wanted = "a whole number" if "int" in kind else "a number" if "float" in kind else "a string"
    raise LbmError(f"launcher file {path}: {key} must be {wanted}, got {value!r}")
