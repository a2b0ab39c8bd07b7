"""What a backend serves: a site's regions, each with its backend, bucket, queues and settings."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbm.errors import LbmError
from lbm.jobs.model import JobState, Queue


@dataclass(frozen=True)
class SlackSettings:
    """Where the Slack incoming-webhook URL is found (never the URL itself) and which states to report."""

    webhook_url_env: str | None = None
    webhook_url_file: str | None = None
    states: tuple[str, ...] = (JobState.RUNNING.value, JobState.FAILED.value)


@dataclass(frozen=True)
class Region:
    """One place jobs run: a backend, a bucket URL and prefix, queues, instance-type aliases.

    `settings` is the backend's own block of the site file, validated by the backend (JSON-able);
    `nicknames` are the site's queue nicknames (see `lbm.site.nicknames` for resolving them);
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
    settings: dict[str, Any] = field(default_factory=dict)

    def queue(self, name: str) -> Queue:
        """The queue with exactly this name."""
        for queue in self.queues:
            if queue.name == name:
                return queue
        known = ", ".join(q.name for q in self.queues)
        raise LbmError(f"unknown queue {name!r} in region {self.name}; queues: {known}")

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
    """All regions of a deployment; `source` is the file it came from (None: a built-in site)."""

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
