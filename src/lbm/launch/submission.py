"""From a LaunchSpec to a queued job: pick region, queue and owner, compose the config, name and submit.

`plan` checks everything the site can tell and writes nothing; `submit` names the job (a new name per try
while a name is taken), stores its resolved config as `config.yaml` in the job's artifact folder (the job
trains from that file, on whatever host it runs) and hands the job to the backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lbm.errors import LbmError
from lbm.jobs.backend import JobNameTaken
from lbm.jobs.model import Job, JobSpec, Queue
from lbm.jobs.registry import REGISTRY, backend_info
from lbm.launch.names import job_name, next_moment
from lbm.launch.owner import current_email, job_owner
from lbm.launch.spec import DEFAULT_CONFIG, LaunchSpec
from lbm.site.nicknames import resolve_queue
from lbm.storage.layout import artifact_uri, check_writable, config_uri

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from lbm.jobs.backend import Backend
    from lbm.jobs.region import Region, Site

MAX_NAME_TRIES = 1000


@dataclass
class Submission:
    """A checked launch: where it goes, whose it is, and its composed training config."""

    launch: LaunchSpec
    region: Region
    queue: Queue
    owner: str
    config: DictConfig
    overrides: list[str]
    notes: list[str] = field(default_factory=list)
    owner_email: str | None = None

    def artifact_uri(self, name: str) -> str:
        return artifact_uri(self.region, self.owner, name, self.launch.task_name)

    def job_spec(self, name: str) -> JobSpec:
        """The JobSpec for this submission under the job name `name`."""
        from omegaconf import OmegaConf

        from lbm.train.compose import to_yaml

        config = self.config.copy()
        OmegaConf.update(config, "logging.name", name, force_add=True)
        if OmegaConf.select(config, "logging.group", default=None) is None:
            OmegaConf.update(config, "logging.group", name, force_add=True)
        launch = self.launch
        artifact = self.artifact_uri(name)
        command = ["lbm", "train", "--config-uri", config_uri(artifact)]
        if launch.nproc_per_node > 1:
            command += ["--nproc-per-node", str(launch.nproc_per_node)]
        return JobSpec(
            name=name,
            owner=self.owner,
            queue=self.queue.name,
            command=tuple(command),
            artifact_uri=artifact,
            share_identifier=launch.team.lower() if launch.team else self.owner,
            priority=launch.priority,
            instance_type=self.queue.instance_type,
            instance_count=launch.instance_count,
            nproc_per_node=launch.nproc_per_node,
            max_runtime_s=launch.max_runtime_s,
            retries=launch.retries,
            region=self.region.name,
            image_uri=launch.image_uri or self.region.main_image,
            task_name=launch.task_name,
            team=launch.team.lower() if launch.team else None,
            resolved_config=to_yaml(config),
            owner_email=self.owner_email,
        )


def plan(launch: LaunchSpec, site: Site) -> Submission:
    """Check a launch against the site and compose its training config; raises LbmError, writes nothing."""
    region = site.region(launch.region)
    if launch.instance_count > 1 and not backend_info(region.backend).multi_node:
        multi = ", ".join(name for name, info in REGISTRY.items() if info.multi_node) or "none installed"
        raise LbmError(
            f"--instance-count {launch.instance_count} needs a multi-machine backend ({multi}); region "
            f"{region.name} uses the {region.backend} backend (one machine): use --instance-count 1 or "
            "another --region"
        )
    queue, notes = _choose_queue(launch, region)
    if queue.capacity == 0:
        notes.append(f"queue {queue.name} has no capacity now; the job waits RUNNABLE until it gets some")
    owner = job_owner(launch.image_uri, region.main_image)
    overrides = launch.flag_overrides()
    config_dir = str(Path(launch.config_dir).absolute()) if launch.config_dir else None
    config = _compose(launch, overrides, config_dir, notes)
    launch = dataclasses.replace(
        launch, config_file=launch.config_file or DEFAULT_CONFIG, config_dir=config_dir
    )
    return Submission(launch, region, queue, owner, config, overrides, notes, owner_email=current_email())


def _compose(
    launch: LaunchSpec, overrides: list[str], config_dir: str | None, notes: list[str]
) -> DictConfig:
    """The launch's training config; without a config file, the default one, with a note saying so."""
    from lbm.train.compose import DatasetRequired, compose_config, configs_without_dataset

    if launch.config_file is not None:
        return compose_config(launch.config_file, overrides, config_dir)
    try:
        config = compose_config(DEFAULT_CONFIG, overrides, config_dir)
    except DatasetRequired:
        others = ", ".join(configs_without_dataset(config_dir))
        raise LbmError(
            f"no --config-file given, so the default config {DEFAULT_CONFIG} is used, and it needs a "
            "dataset: add --config-overrides task.dataset_path=<local path or URL of the dataset>, or choose "
            f"a config that makes its own data with --config-file ({others})"
        ) from None
    notes.append(
        f"no --config-file given: using the default config {DEFAULT_CONFIG}, which trains on the dataset at "
        f"task.dataset_path ({config.task.dataset_path})"
    )
    return config


def _choose_queue(launch: LaunchSpec, region: Region) -> tuple[Queue, list[str]]:
    if launch.queue is not None:
        queue = resolve_queue(region, launch.queue)
        if (
            launch.instance_type is not None
            and region.instance_type(launch.instance_type) != queue.instance_type
        ):
            raise LbmError(
                f"queue {queue.name} serves {queue.instance_type}, not {launch.instance_type}: "
                "drop --instance-type or pick another --queue"
            )
        return queue, []
    instance_type = launch.instance_type or default_instance_type(region)
    queue, note = region.queue_for(instance_type, launch.team)
    return queue, [note] if note else []


def default_instance_type(region: Region) -> str:
    """This machine's first GPU type when it has GPUs (local backend), else the region's first type."""
    return next(iter(region.devices), None) or region.instance_types()[0]


def submit(
    submission: Submission,
    backend: Backend,
    secrets: Mapping[str, str],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    before_submit: Callable[[JobSpec], None] = lambda spec: None,
) -> Job:
    """Queue the job under a fresh name, moving the name's timestamp on while a name is taken (by a job of
    the backend, or by an artifact folder that already holds a config). `before_submit` sees each spec
    just before the backend gets it (a caller that must not lose a queued job records its name there)."""
    from lbm.storage.transfer import write_new

    moment = now()
    for _ in range(MAX_NAME_TRIES):
        name = job_name(submission.owner, moment, submission.launch.task_name)
        spec = submission.job_spec(name)
        try:
            if write_new(config_uri(spec.artifact_uri), spec.resolved_config.encode()):
                before_submit(spec)
                return backend.submit(spec, secrets=secrets)
        except JobNameTaken:
            pass
        moment = next_moment(moment)
    raise LbmError(f"no free job name after {MAX_NAME_TRIES} tries (last: {name})")


def check_bucket(region: Region) -> None:
    """LbmError when the region's artifact bucket (under its prefix) cannot be written."""
    check_writable(f"{region.bucket.rstrip('/')}/{region.prefix}")
