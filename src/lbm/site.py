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

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbm.errors import LbmError
from lbm.jobs.local.fair_share import (
    MAX_COMPUTE_RESERVATION,
    MAX_SHARE_DECAY_S,
    MAX_WEIGHT_FACTOR,
    MIN_DECAY_WINDOW_S,
    MIN_WEIGHT_FACTOR,
    PREFIX_WILDCARD,
)
from lbm.jobs.model import JobState, Queue

BACKENDS = ("local", "sagemaker")
TEAMS = ("mvdp", "vla", "dp", "das")
NOTIFY_STATES = (JobState.RUNNING.value, JobState.FAILED.value, JobState.SUCCEEDED.value)
EXAMPLES_DIR = Path(__file__).parent / "site_examples"
CPU = "cpu"


def lbm_home() -> Path:
    """Where the local backend keeps its jobs, runs and bucket: $LBM_HOME, else the user data dir."""
    home = os.environ.get("LBM_HOME")
    if home:
        return Path(home).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir("lbm"))


def config_dir() -> Path:
    """The user's lbm settings folder: $LBM_CONFIG_DIR, else the user config dir."""
    path = os.environ.get("LBM_CONFIG_DIR")
    if path:
        return Path(path).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_config_dir("lbm"))


@dataclass(frozen=True)
class SlackSettings:
    """Where the Slack incoming-webhook URL is found (never the URL itself) and which states to report."""

    webhook_url_env: str | None = None
    webhook_url_file: str | None = None
    states: tuple[str, ...] = (JobState.RUNNING.value, JobState.FAILED.value)


@dataclass(frozen=True)
class Region:
    """One place jobs run: a backend, a bucket URL and prefix, queues, instance-type aliases.

    `devices` maps a local GPU instance type to its CUDA device indices (local backend only).
    """

    name: str
    backend: str
    bucket: str
    prefix: str
    queues: list[Queue]
    main_image: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    nicknames: dict[str, str] = field(default_factory=dict)
    devices: dict[str, tuple[int, ...]] = field(default_factory=dict)
    slack: SlackSettings | None = None

    def queue(self, name_or_nickname: str) -> Queue:
        """The queue with this name or site nickname."""
        name = self.nicknames.get(name_or_nickname, name_or_nickname)
        for queue in self.queues:
            if queue.name == name:
                return queue
        known = ", ".join(q.name for q in self.queues)
        raise LbmError(f"unknown queue {name_or_nickname!r} in region {self.name}; queues: {known}")

    def instance_types(self) -> list[str]:
        """The instance types the region's queues serve, in site order."""
        return list(dict.fromkeys(q.instance_type for q in self.queues))

    def instance_type(self, alias_or_name: str) -> str:
        """The full instance type for an alias (e.g. p4d → ml.p4d.24xlarge) or a full name."""
        resolved = self.aliases.get(alias_or_name, alias_or_name)
        if resolved in self.instance_types():
            return resolved
        choices = ", ".join([*self.aliases, *self.instance_types()])
        raise LbmError(f"unknown instance type {alias_or_name!r} in region {self.name}; choose: {choices}")

    def queue_for(self, instance_type: str, team: str | None) -> tuple[Queue, str | None]:
        """The queue for an instance type (alias allowed) and team, and a note when the team has none."""
        resolved = self.instance_type(instance_type)
        team_name = team.lower() if team else None
        same_type = [q for q in self.queues if q.instance_type == resolved]
        if team_name:
            for queue in same_type:
                if queue.team == team_name:
                    return queue, None
        shared = [q for q in same_type if q.team is None]
        if not shared:
            teams = ", ".join(sorted({q.team for q in same_type if q.team}))
            raise LbmError(
                f"region {self.name} has no shared queue for instance type {resolved}; "
                f"pass --team with one of: {teams}"
            )
        note = None
        if team_name:
            note = f"team {team_name!r} has no queue of its own; using the shared queue {shared[0].name}"
        return shared[0], note

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able) that `Region.from_dict` turns back into this region."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Region:
        values = dict(data)
        values["queues"] = [Queue(**q) for q in values["queues"]]
        values["devices"] = {k: tuple(v) for k, v in values["devices"].items()}
        if values["slack"] is not None:
            values["slack"] = SlackSettings(**{**values["slack"], "states": tuple(values["slack"]["states"])})
        return cls(**values)


@dataclass(frozen=True)
class Site:
    """All regions of a deployment; `source` is the file it came from (None: the built-in default)."""

    regions: dict[str, Region]
    default_region: str
    source: Path | None = None

    def region(self, name: str | None = None) -> Region:
        """The named region; None means $AWS_DEFAULT_REGION when it is one of ours, else the default."""
        if name is None:
            env_region = os.environ.get("AWS_DEFAULT_REGION")
            name = env_region if env_region in self.regions else self.default_region
        if name not in self.regions:
            raise LbmError(f"unknown region {name!r}; this site has: {', '.join(self.regions)}")
        return self.regions[name]


def load_site(path: str | os.PathLike | None = None) -> Site:
    """The site from `path`, else $LBM_SITE, else `<config dir>/site.yaml`, else the built-in default."""
    chosen = path if path is not None else os.environ.get("LBM_SITE")
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
)
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
    data = reader.mapping(value, key, _REGION_KEYS)
    backend = reader.string(data.get("backend"), f"{key}.backend", required=True)
    if backend not in BACKENDS:
        raise reader.error(f"{key}.backend", f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
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
        queue, queue_nicknames = _queue(reader, f"{key}.queues[{index}]", item)
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
    )


def _queue(reader: _SiteFile, key: str, value: Any) -> tuple[Queue, list[str]]:
    data = reader.mapping(value, key, _QUEUE_KEYS)
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
