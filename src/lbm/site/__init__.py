"""The deployment ("site"): regions, each with a backend, a bucket, queues, instance types and nicknames.

With no site file, the built-in default site has one region `local` (backend `local`, bucket
`file://$LBM_HOME/bucket`): a shared queue per instance type of this machine (CPU, and one per GPU model)
and small prototyping queues for the teams. `$LBM_SITE` (a path, or the name of a shipped example such as
`sagemaker`) or `<user config dir>/lbm/site.yaml` replaces it. A site file looks like::

    defaultRegion: us-east-1
    instanceAliases: {p5: ml.p5.48xlarge}
    notifications:
      slack: {webhookUrlEnv: LBM_SLACK_WEBHOOK_URL, states: [RUNNING, FAILED]}
    regions:
      us-east-1:
        backend: sagemaker
        bucket: s3://robotics-manip-lbm
        prefix: sagemaker_outputs
        mainImage: 123456789012.dkr.ecr.us-east-1.amazonaws.com/lbm-sagemaker:latest
        queues:
          - name: fss-ml-p5-48xlarge-us-east-1
            instanceType: ml.p5.48xlarge
            capacity: 4
            nicknames: [p5]
            fairShare: {shareDecaySeconds: 3600, computeReservation: 10, weightFactors: {main: 0.5}}
          - {name: mvdp-ml-p5-48xlarge-us-east-1, instanceType: ml.p5.48xlarge, capacity: 1, team: mvdp}

`fairShare` is AWS Batch's FairsharePolicy (see `lbm.jobs.local.fair_share`): `shareDecaySeconds` 0 (the 600 s
minimum window) to 604800, `computeReservation` a percentage 0-99, and weight factors 0.0001-999.9999 by share
identifier, at most one of them a `prefix*` entry; a lower weight factor gets a larger share.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbm.errors import LbmError
from lbm.jobs.local.fair_share import (
    MAX_COMPUTE_RESERVATION,
    MAX_SHARE_DECAY_S,
    MAX_WEIGHT_FACTOR,
    MIN_DECAY_WINDOW_S,
    MIN_WEIGHT_FACTOR,
    PREFIX_WILDCARD,
)
from lbm.jobs.local.home import lbm_home
from lbm.jobs.model import JobState, Queue
from lbm.jobs.region import Region, Site, SlackSettings
from lbm.jobs.registry import REGISTRY, backend_info

if TYPE_CHECKING:
    from pydantic import BaseModel

    from lbm.jobs.backend import Backend

TEAMS = ("mvdp", "vla", "dp", "das")
NOTIFY_STATES = (JobState.RUNNING.value, JobState.FAILED.value, JobState.SUCCEEDED.value)
EXAMPLES_DIR = Path(__file__).parent / "examples"
CPU = "cpu"


def config_dir() -> Path:
    """The user's lbm settings folder: $LBM_CONFIG_DIR, else the user config dir."""
    path = os.environ.get("LBM_CONFIG_DIR")
    if path:
        return Path(path).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_config_dir("lbm"))


def load_site(path: str | os.PathLike | None = None) -> Site:
    """The site from `path`, else $LBM_SITE, else `<config dir>/site.yaml`, else the built-in default.

    `path` or $LBM_SITE may also name a shipped example (`sagemaker`) or a backend with a built-in site
    (`slurm`: the cluster this machine's Slurm configuration names).
    """
    chosen = path if path is not None else os.environ.get("LBM_SITE")
    if chosen in REGISTRY and not Path(chosen).exists():
        backend = REGISTRY[chosen].load()
        if hasattr(backend, "builtin_site"):
            return backend.builtin_site()
    if chosen:
        site_file = Path(chosen).expanduser()
        example = EXAMPLES_DIR / f"{chosen}.yaml"
        if not site_file.exists() and example.exists():
            site_file = example
        if not site_file.is_file():
            examples = ", ".join(sorted(p.stem for p in EXAMPLES_DIR.glob("*.yaml")))
            raise LbmError(f"site file {site_file} does not exist; give a YAML file or one of: {examples}")
        return _site_from_file(site_file)
    user_file = config_dir() / "site.yaml"
    if user_file.is_file():
        return _site_from_file(user_file)
    return default_site()


def default_site() -> Site:
    """One `local` region for this machine: CPU and per-GPU-model shared queues, small team queues."""
    gpus = detect_gpus()
    queues = [Queue(name="local-cpu", instance_type=CPU, capacity=1)]
    devices: dict[str, tuple[int, ...]] = {}
    aliases: dict[str, str] = {}
    for model, indices in gpus.items():
        instance_type = f"gpu-{_slug(model)}"
        devices[instance_type] = tuple(indices)
        aliases.setdefault("gpu", instance_type)
        queues.append(
            Queue(name=f"local-{instance_type}", instance_type=instance_type, capacity=len(indices))
        )
    team_type = next(iter(devices), CPU)
    queues += [
        Queue(name=f"local-{team_type}-{team}", instance_type=team_type, capacity=1, team=team)
        for team in TEAMS
    ]
    region = Region(
        name="local",
        backend="local",
        bucket=f"file://{lbm_home() / 'bucket'}",
        prefix="outputs",
        queues=queues,
        aliases=aliases,
        devices=devices,
    )
    return Site(regions={"local": region}, default_region="local")


def detect_gpus() -> dict[str, list[int]]:
    """CUDA device indices per GPU model on this machine, without importing torch (empty when none)."""
    proc_dir = Path("/proc/driver/nvidia/gpus")
    models: list[str] = []
    if proc_dir.is_dir():
        for info in sorted(proc_dir.glob("*/information")):
            match = re.search(r"^Model:\s*(.+)$", info.read_text(errors="replace"), re.MULTILINE)
            models.append(match.group(1).strip() if match else "nvidia-gpu")
    elif shutil.which("nvidia-smi"):
        try:
            result = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return {}
        models = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    by_model: dict[str, list[int]] = {}
    for index, model in enumerate(models):
        by_model.setdefault(model, []).append(index)
    return by_model


def _slug(text: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return re.sub(r"^nvidia-", "", words) or "gpu"


# --- site files -------------------------------------------------------------------------------------

_SITE_KEYS = ("defaultRegion", "mainImage", "instanceAliases", "notifications", "regions")
_REGION_KEYS = (
    "backend",
    "bucket",
    "prefix",
    "mainImage",
    "instanceAliases",
    "gpuDevices",
    "notifications",
    "queues",
)  # and a block named after the region's backend, which that backend validates
_QUEUE_KEYS = ("name", "instanceType", "capacity", "team", "nicknames", "fairShare")
_FAIR_SHARE_KEYS = ("shareDecaySeconds", "computeReservation", "weightFactors")
_NOTIFY_KEYS = ("slack",)
_SLACK_KEYS = ("webhookUrlEnv", "webhookUrlFile", "states")


class _SiteFile:
    """Reads one site YAML file, reporting the first problem as `site file F: key: what is wrong`."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, problem: str) -> LbmError:
        return LbmError(f"site file {self.path}: {key}: {problem}")

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, got {type(value).__name__}")
        if allowed is not None:
            unknown = [k for k in value if k not in allowed]
            if unknown:
                raise self.error(key, f"unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
        return value

    def string(self, value: Any, key: str, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value

    def number(self, value: Any, key: str, *, check: Callable[[float], bool], rule: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not check(value):
            raise self.error(key, f"must be {rule}, got {value!r}")
        return value

    def backend_settings(self, model: type[BaseModel] | None, value: Any, key: str) -> dict[str, Any]:
        """A backend's block checked by its pydantic model, as JSON-able data; {} when it takes none."""
        if model is None:
            if value is not None:
                raise self.error(key, "this backend takes no settings block")
            return {}
        from pydantic import ValidationError

        try:
            return model.model_validate(self.mapping(value, key)).model_dump(mode="json", by_alias=True)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join([key, *map(str, problem["loc"])])
            if problem["type"] == "missing":
                raise self.error(where, "is required") from None
            if problem["type"] == "extra_forbidden":
                allowed = ", ".join(f.alias or n for n, f in model.model_fields.items())
                raise self.error(where, f"unknown key; allowed: {allowed}") from None
            message = problem["msg"][:1].lower() + problem["msg"][1:]
            raise self.error(where, f"{message}, got {problem['input']!r}") from None

    def strings(self, value: Any, key: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, got {type(value).__name__}")
        return [self.string(item, f"{key}[{i}]", required=True) for i, item in enumerate(value)]

    def string_map(self, value: Any, key: str) -> dict[str, str]:
        return {
            str(k): self.string(v, f"{key}.{k}", required=True) for k, v in self.mapping(value, key).items()
        }


def _site_from_file(path: Path) -> Site:
    import yaml

    reader = _SiteFile(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise LbmError(f"site file {path}: cannot read it as YAML: {' '.join(str(error).split())}") from None
    data = reader.mapping(data, "(top level)", _SITE_KEYS)
    site_aliases = reader.string_map(data.get("instanceAliases"), "instanceAliases")
    site_image = reader.string(data.get("mainImage"), "mainImage")
    site_slack = _slack(reader, data.get("notifications"), "notifications")
    regions_data = reader.mapping(data.get("regions"), "regions")
    if not regions_data:
        raise reader.error("regions", "is required and must name at least one region")
    regions = {}
    for name, value in regions_data.items():
        regions[str(name)] = _region(reader, str(name), value, site_aliases, site_image, site_slack)
    default = reader.string(data.get("defaultRegion"), "defaultRegion") or next(iter(regions))
    if default not in regions:
        raise reader.error("defaultRegion", f"{default!r} is not one of the regions: {', '.join(regions)}")
    return Site(regions=regions, default_region=default, source=path)


def _region(
    reader: _SiteFile,
    name: str,
    value: Any,
    site_aliases: dict[str, str],
    site_image: str | None,
    site_slack: SlackSettings | None,
) -> Region:
    key = f"regions.{name}"
    data = reader.mapping(value, key)
    backend = reader.string(data.get("backend"), f"{key}.backend", required=True)
    if backend not in REGISTRY:
        raise reader.error(f"{key}.backend", f"unknown backend {backend!r}; allowed: {', '.join(REGISTRY)}")
    reader.mapping(data, key, (*_REGION_KEYS, backend))
    backend_class = backend_info(backend).load()
    bucket = reader.string(data.get("bucket"), f"{key}.bucket", required=True)
    if "://" not in bucket:
        raise reader.error(
            f"{key}.bucket", f"must be a URL such as s3://bucket or file:///path, got {bucket!r}"
        )
    if bucket.startswith("file://"):
        local_path = os.path.expandvars(bucket[len("file://") :].replace("$LBM_HOME", str(lbm_home())))
        bucket = f"file://{Path(local_path).expanduser().absolute()}"
    prefix = reader.string(data.get("prefix"), f"{key}.prefix") or "outputs"
    queues_data = data.get("queues")
    if not isinstance(queues_data, list) or not queues_data:
        raise reader.error(f"{key}.queues", "is required and must be a non-empty list of queues")
    queues: list[Queue] = []
    nicknames: dict[str, str] = {}
    for index, item in enumerate(queues_data):
        queue, queue_nicknames = _queue(reader, f"{key}.queues[{index}]", item, backend, backend_class)
        if any(q.name == queue.name for q in queues):
            raise reader.error(f"{key}.queues[{index}].name", f"queue {queue.name!r} is defined twice")
        queues.append(queue)
        nicknames.update(dict.fromkeys(queue_nicknames, queue.name))
    devices = {}
    for instance_type, indices in reader.mapping(data.get("gpuDevices"), f"{key}.gpuDevices").items():
        if not isinstance(indices, list) or not all(isinstance(i, int) and i >= 0 for i in indices):
            raise reader.error(
                f"{key}.gpuDevices.{instance_type}", f"must be a list of device indices, got {indices!r}"
            )
        devices[str(instance_type)] = tuple(indices)
    aliases = {**site_aliases, **reader.string_map(data.get("instanceAliases"), f"{key}.instanceAliases")}
    slack = (
        _slack(reader, data["notifications"], f"{key}.notifications")
        if "notifications" in data
        else site_slack
    )
    return Region(
        name=name,
        backend=backend,
        bucket=bucket.rstrip("/"),
        prefix=prefix.strip("/"),
        queues=queues,
        main_image=reader.string(data.get("mainImage"), f"{key}.mainImage") or site_image,
        aliases=aliases,
        nicknames=nicknames,
        devices=devices,
        slack=slack,
        settings=reader.backend_settings(backend_class.RegionSettings, data.get(backend), f"{key}.{backend}"),
    )


def _queue(
    reader: _SiteFile, key: str, value: Any, backend: str, backend_class: type[Backend]
) -> tuple[Queue, list[str]]:
    data = reader.mapping(value, key, (*_QUEUE_KEYS, backend))
    capacity = data.get("capacity", 1)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
        raise reader.error(
            f"{key}.capacity", f"must be a whole number of instances (0 or more), got {capacity!r}"
        )
    team = reader.string(data.get("team"), f"{key}.team")
    fair_share = reader.mapping(data.get("fairShare"), f"{key}.fairShare", _FAIR_SHARE_KEYS)
    decay = reader.number(
        fair_share.get("shareDecaySeconds", 3600),
        f"{key}.fairShare.shareDecaySeconds",
        check=lambda v: float(v).is_integer() and 0 <= v <= MAX_SHARE_DECAY_S,
        rule=f"a whole number of seconds from 0 (the {MIN_DECAY_WINDOW_S} s minimum) to {MAX_SHARE_DECAY_S}",
    )
    reservation = reader.number(
        fair_share.get("computeReservation", 0),
        f"{key}.fairShare.computeReservation",
        check=lambda v: float(v).is_integer() and 0 <= v <= MAX_COMPUTE_RESERVATION,
        rule=f"a whole percentage from 0 to {MAX_COMPUTE_RESERVATION}",
    )
    weights = _weight_factors(reader, fair_share.get("weightFactors"), f"{key}.fairShare.weightFactors")
    queue = Queue(
        name=reader.string(data.get("name"), f"{key}.name", required=True),
        instance_type=reader.string(data.get("instanceType"), f"{key}.instanceType", required=True),
        capacity=capacity,
        team=team.lower() if team else None,
        share_decay_seconds=float(decay),
        compute_reservation=float(reservation),
        weight_factors=weights,
        fair_share="fairShare" in data,
        settings=reader.backend_settings(backend_class.QueueSettings, data.get(backend), f"{key}.{backend}"),
    )
    return queue, reader.strings(data.get("nicknames"), f"{key}.nicknames")


def _weight_factors(reader: _SiteFile, value: Any, key: str) -> dict[str, float]:
    """Weight factors by share identifier, with at most one `prefix*` entry that no other entry overlaps."""
    weights: dict[str, float] = {}
    for entry, weight in reader.mapping(value, key).items():
        share = str(entry)
        if PREFIX_WILDCARD in share[:-1]:
            raise reader.error(f"{key}.{share}", f"only a trailing {PREFIX_WILDCARD} may mark a prefix entry")
        weights[share] = reader.number(
            weight,
            f"{key}.{share}",
            check=lambda v: MIN_WEIGHT_FACTOR <= v <= MAX_WEIGHT_FACTOR,
            rule=f"a number from {MIN_WEIGHT_FACTOR} to {MAX_WEIGHT_FACTOR}",
        )
    prefixes = [s for s in weights if s.endswith(PREFIX_WILDCARD)]
    if len(prefixes) > 1:
        raise reader.error(key, f"at most one prefix{PREFIX_WILDCARD} entry, got {', '.join(prefixes)}")
    for prefix in prefixes:
        overlapping = [s for s in weights if s != prefix and s.startswith(prefix[: -len(PREFIX_WILDCARD)])]
        if overlapping:
            raise reader.error(key, f"{overlapping[0]} overlaps the prefix entry {prefix}; drop one of them")
    return weights


def _slack(reader: _SiteFile, value: Any, key: str) -> SlackSettings | None:
    data = reader.mapping(value, key, _NOTIFY_KEYS)
    if "slack" not in data:
        return None
    slack = reader.mapping(data["slack"], f"{key}.slack", _SLACK_KEYS)
    env = reader.string(slack.get("webhookUrlEnv"), f"{key}.slack.webhookUrlEnv")
    file = reader.string(slack.get("webhookUrlFile"), f"{key}.slack.webhookUrlFile")
    if not env and not file:
        raise reader.error(f"{key}.slack", "needs webhookUrlEnv (a variable name) or webhookUrlFile (a path)")
    states = tuple(reader.strings(slack.get("states"), f"{key}.slack.states")) or SlackSettings.states
    for state in states:
        if state not in NOTIFY_STATES:
            raise reader.error(
                f"{key}.slack.states", f"unknown state {state!r}; allowed: {', '.join(NOTIFY_STATES)}"
            )
    return SlackSettings(webhook_url_env=env, webhook_url_file=file, states=states)
