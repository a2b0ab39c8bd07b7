"""Compose a training config: a named Hydra config plus command-line overrides, validated.

Torch-free: the launcher validates a job's config with it before anything is queued.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lbm.errors import LbmError

CONFIG_PACKAGE = "lbm.train.config"

# Values a user sets from flags and sweeps that must keep their type (e.g. a batch size stays a number).
_NUMBER = (int, float)


def data_dir() -> str:
    """Where generated datasets live: $LBM_DATA_DIR, else the user's cache dir."""
    if "LBM_DATA_DIR" in os.environ:
        return os.environ["LBM_DATA_DIR"]
    from platformdirs import user_cache_dir

    return str(Path(user_cache_dir("lbm")) / "datasets")


if not OmegaConf.has_resolver("lbm_data_dir"):
    OmegaConf.register_new_resolver("lbm_data_dir", data_dir)


def _names_in(directory: Path) -> set[str]:
    return {p.stem for p in directory.glob("*.yaml")} if directory.is_dir() else set()


def available_configs(config_dir: str | None = None) -> list[str]:
    """Names of the training configs: the package's, then those in `config_dir`."""
    package_dir = Path(str(resources.files(CONFIG_PACKAGE)))
    names = _names_in(package_dir)
    if config_dir is not None:
        names |= _names_in(Path(config_dir))
    return sorted(names)


def configs_without_dataset(config_dir: str | None = None) -> list[str]:
    """The configs that train as they are, on data they make themselves (no `task.dataset_path` to give)."""
    usable = []
    for name in available_configs(config_dir):
        try:
            compose_config(name, [], config_dir)
        except LbmError:  # DatasetRequired, or a user's config that does not compose on its own
            continue
        usable.append(name)
    return usable


def _check_config_name(config_name: str, config_dir: str | None) -> bool:
    """Whether the name is a package config (else it is in `config_dir`); unknown names are errors."""
    if config_dir is not None and not Path(config_dir).is_dir():
        raise LbmError(f"--config-dir {config_dir!r} is not a directory")
    names = available_configs(config_dir)
    if config_name not in names:
        close = difflib.get_close_matches(config_name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LbmError(f"unknown config {config_name!r}{hint} (available: {', '.join(names)})")
    return config_name in available_configs(None)


def _parse_overrides(overrides: Sequence[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException as error:
            reason = str(error).splitlines()[0]
            raise LbmError(
                f"malformed override {text!r}: {reason} (expected key=value, +key=value or ~key)"
            ) from None
    return parsed


def _compose(config_name: str, overrides: list[str], config_dir: str | None, in_package: bool) -> DictConfig:
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.errors import HydraException

    if config_dir is None:
        context, search = initialize_config_module(CONFIG_PACKAGE, version_base=None), []
    elif in_package:
        context = initialize_config_module(CONFIG_PACKAGE, version_base=None)
        search = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"]
    else:
        context = initialize_config_dir(str(Path(config_dir).resolve()), version_base=None)
        search = [f"hydra.searchpath=[pkg://{CONFIG_PACKAGE}]"]
    try:
        with context:
            return compose(config_name, overrides=search + overrides)
    except HydraException as error:
        first = str(error).strip().splitlines()[0]
        if first.startswith("Could not override"):
            key = first.split("'")[1]
            raise LbmError(
                f"config {config_name!r} has no key {key}: check the spelling, or use +{key}=VALUE to add it"
            ) from None
        raise LbmError(f"cannot compose config {config_name!r}: {first}") from None


def _check_types(base: DictConfig, cfg: DictConfig, parsed: list) -> None:
    """A value overridden on the command line keeps the kind of its default (number, bool, list, map)."""
    for override in parsed:
        if override.is_delete() or override.is_add():
            continue
        key = override.key_or_group
        default = OmegaConf.select(base, key, throw_on_missing=False)
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if default is None or value is None or OmegaConf.is_missing(base, key):
            continue
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(default, bool) == isinstance(value, bool)
        elif isinstance(default, _NUMBER):
            ok = isinstance(value, _NUMBER)
        elif isinstance(default, DictConfig | dict):
            ok = isinstance(value, DictConfig | dict)
        else:
            ok = True
        if not ok:
            kind = (
                "a number"
                if isinstance(default, _NUMBER) and not isinstance(default, bool)
                else ("true or false" if isinstance(default, bool) else "a mapping")
            )
            raise LbmError(
                f"override {key}={value!r} is not valid: {key} must be {kind} (default {default!r})"
            )


class DatasetRequired(LbmError):
    """The config trains on a dataset it cannot make itself, and `task.dataset_path` is not set."""


def _check_required(cfg: DictConfig) -> None:
    from omegaconf import MissingMandatoryValue

    task = cfg.get("task")
    if isinstance(task, DictConfig) and OmegaConf.is_missing(task, "dataset_path"):
        raise DatasetRequired(
            "task.dataset_path is required by this config: pass task.dataset_path=<local path or URL of the "
            "dataset>"
        )
    try:
        OmegaConf.resolve(cfg)
    except MissingMandatoryValue as error:
        raise LbmError(
            f"missing required value: {error.full_key} (set it with {error.full_key}=VALUE)"
        ) from None
    except OmegaConfBaseException as error:
        raise LbmError(f"cannot resolve config: {str(error).splitlines()[0]}") from None


def compose_config(
    config_name: str, overrides: Sequence[str] = (), config_dir: str | None = None
) -> DictConfig:
    """The fully resolved training config `config_name` with `overrides` applied.

    Raises LbmError for an unknown config, a malformed override, an override of a key that does not exist
    (without `+`), a value of the wrong kind (e.g. a non-numeric batch size), a missing required value, or
    a value that breaks a rule of `lbm.train.config.schema` (e.g. a negative learning rate).
    """
    from lbm.train.config.schema import check_config, unruled_keys
    from lbm.train.legacy_targets import rewrite_legacy_targets

    in_package = _check_config_name(config_name, config_dir)
    overrides = list(overrides)
    parsed = _parse_overrides(overrides)
    cfg = _compose(config_name, overrides, config_dir, in_package)
    _check_required(cfg)
    rewrite_legacy_targets(cfg)
    values = OmegaConf.to_container(cfg, resolve=True)
    # The schema checks the kind of every key it has a field for; the others keep the kind of their default.
    unruled = set(unruled_keys(values))
    unruled_overrides = [o for o in parsed if _within(o.key_or_group, unruled)]
    if unruled_overrides:
        _check_types(_compose(config_name, [], config_dir, in_package), cfg, unruled_overrides)
    check_config(values)
    OmegaConf.set_struct(cfg, False)
    return cfg


def load_resolved_config(uri: str) -> DictConfig:
    """The resolved config a launcher stored (a path, file:// or s3:// URL of its config.yaml), checked
    against the schema as `compose_config` checks a composed one; never recomposed."""
    import fsspec
    import yaml

    from lbm.train.config.schema import check_config

    try:
        with fsspec.open(uri, "r") as file:
            values = yaml.safe_load(file.read())
    except FileNotFoundError:
        raise LbmError(f"no resolved config at {uri}") from None
    except (OSError, yaml.YAMLError) as error:
        raise LbmError(f"cannot read the resolved config {uri}: {' '.join(str(error).split())}") from None
    if not isinstance(values, dict):
        raise LbmError(f"the resolved config {uri} is not a mapping of config keys")
    check_config(values)
    return OmegaConf.create(values)


def _within(key: str, keys: set[str]) -> bool:
    """Whether `key` is one of `keys` or below one of them."""
    return any(key == other or key.startswith(other + ".") for other in keys)


def to_yaml(cfg: DictConfig) -> str:
    """The config as YAML text, as saved in `config.yaml`."""
    return OmegaConf.to_yaml(cfg, resolve=True)
