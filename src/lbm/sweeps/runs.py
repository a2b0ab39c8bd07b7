"""From a run's parameters to a checked launch: the sweep's launch settings, the parameters as overrides,
the conditional file merged over the config, and the sweep as the W&B group (in the file's project)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lbm.launch.overrides import merge_overrides, quoted
from lbm.launch.spec import launch_spec
from lbm.launch.submission import Submission, plan
from lbm.sweeps.conditional import conditional_overrides
from lbm.sweeps.overrides import parameter_overrides
from lbm.sweeps.sweep_file import CONDITIONAL

if TYPE_CHECKING:
    from lbm.jobs.region import Site


@dataclass(frozen=True)
class RunPlanner:
    """Plans the runs of sweep `sweep_name` with the launch `settings` (LaunchSpec fields; its
    config_overrides a list), the sweep's conditional files and its W&B project (the file's `project`)."""

    sweep_name: str
    settings: Mapping[str, Any]
    conditional_files: Mapping[str, dict[str, Any]]
    site: Site
    wandb_project: str | None = None

    def base(self) -> Submission:
        """The launch without any swept parameter (the training config the sweep's keys must name)."""
        return self._plan(self._overrides([]))

    def submission(self, parameters: Mapping[str, Any]) -> Submission:
        """The checked launch of a run with these parameter values (LbmError when a value does not fit)."""
        overrides = self._overrides(parameter_overrides(dict(parameters)))
        name = parameters.get(CONDITIONAL)
        if name is not None:
            merged = conditional_overrides(self._plan(overrides).config, self.conditional_files[name])
            overrides = merge_overrides(overrides, merged)
        return self._plan(overrides)

    def _overrides(self, parameters: list[str]) -> list[str]:
        group = [f"++logging.group={quoted(self.sweep_name)}"]
        if self.wandb_project:
            group.append(f"++logging.project={quoted(self.wandb_project)}")
        return merge_overrides(self.settings.get("config_overrides") or (), group, parameters)

    def _plan(self, overrides: list[str]) -> Submission:
        flags = {**self.settings, "config_overrides": tuple(overrides)}
        return plan(launch_spec({}, flags), self.site)
