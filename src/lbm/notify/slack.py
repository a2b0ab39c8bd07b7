"""Tell a Slack channel (incoming webhook) when a job starts running, fails or succeeds.

The webhook URL is read from the variable or file the site names and is never printed or logged: a failed
post logs one line naming the job and the failure, and never affects the job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lbm.jobs.region import SlackSettings
from lbm.secrets import redact

log = logging.getLogger(__name__)
logging.getLogger("slack_sdk").setLevel(logging.WARNING)


@dataclass(frozen=True)
class JobEvent:
    """A job reached `state` (RUNNING, FAILED or SUCCEEDED)."""

    job: str
    owner: str
    queue: str
    state: str
    reason: str | None = None
    artifact_uri: str | None = None

    def text(self) -> str:
        line = f"Job {self.job} is {self.state} (owner {self.owner}, queue {self.queue})"
        if self.reason:
            line += f": {self.reason}"
        if self.artifact_uri and self.state != "RUNNING":
            line += f"\nArtifacts: {self.artifact_uri}"
        return line


def webhook_url(settings: SlackSettings, env: Mapping[str, str] | None = None) -> str | None:
    """The webhook URL from the settings' variable, else their file; None when neither has one."""
    env = os.environ if env is None else env
    if settings.webhook_url_env and env.get(settings.webhook_url_env, "").strip():
        return env[settings.webhook_url_env].strip()
    if settings.webhook_url_file:
        try:
            return Path(settings.webhook_url_file).expanduser().read_text().strip() or None
        except OSError:
            return None
    return None


class SlackNotifier:
    """Posts job events for the chosen states to one incoming webhook."""

    def __init__(self, url: str, states: Iterable[str], timeout_s: float = 10.0):
        self._url = url
        self.states = frozenset(states)
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"SlackNotifier(states={sorted(self.states)})"

    @classmethod
    def from_settings(
        cls, settings: SlackSettings | None, env: Mapping[str, str] | None = None
    ) -> SlackNotifier | None:
        """A notifier when Slack is configured and its URL can be found, else None (logged)."""
        if settings is None:
            return None
        url = webhook_url(settings, env)
        if url is None:
            where = settings.webhook_url_env or settings.webhook_url_file
            log.warning("slack notifications are configured but no webhook URL was found in %s", where)
            return None
        return cls(url, settings.states)

    def wants(self, state: str) -> bool:
        return state in self.states

    def send(self, event: JobEvent) -> bool:
        """Post the event; True when Slack accepted it. Never raises."""
        from slack_sdk.webhook import WebhookClient

        try:
            response = WebhookClient(self._url, timeout=int(max(1, self.timeout_s))).send(text=event.text())
        except Exception as error:  # noqa: BLE001 - a notification must never affect a job
            log.warning(
                "slack notification for job %s failed: %s: %s",
                event.job,
                type(error).__name__,
                redact(str(error), [self._url]),
            )
            return False
        if response.status_code != 200:
            log.warning("slack notification for job %s failed: HTTP %s", event.job, response.status_code)
            return False
        return True
