"""Job names: `<owner>-lbm-training-YYYY-MM-DD-HH-MM-SS-mmm` (single task: `<owner>-<task>-training-…`).

Names are at most 63 characters and match `[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}` (SageMaker's rule); the
owner and task part is shortened when needed, never the timestamp (UTC, to the millisecond).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

MAX_LENGTH = 63
NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_TIMESTAMP_LENGTH = len("YYYY-MM-DD-HH-MM-SS-mmm")


def dns_safe(text: str) -> str:
    """Lower-case letters, digits and single dashes only (e.g. "Jane.Doe_2" → "jane-doe-2")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def kebab(text: str) -> str:
    """A task name in kebab-case: "PutCupOnSaucer" and "put_cup_on_saucer" → "put-cup-on-saucer"."""
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1-\2", text)
    return dns_safe(re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", text))


def timestamp(moment: datetime) -> str:
    """`YYYY-MM-DD-HH-MM-SS-mmm` in UTC."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%d-%H-%M-%S-") + f"{utc.microsecond // 1000:03d}"


def job_name(owner: str, moment: datetime, task_name: str | None = None) -> str:
    """The job name for `owner` launched at `moment` (single-task when `task_name` is given)."""
    suffix = f"-training-{timestamp(moment)}"
    room = MAX_LENGTH - len(suffix)
    owner = dns_safe(owner) or "user"
    if task_name is None:
        stem = f"{owner[: room - len('-lbm')].rstrip('-')}-lbm"
    else:
        task = kebab(task_name) or "task"
        owner = owner[: max(room // 2, room - 1 - len(task))].rstrip("-")
        stem = f"{owner}-{task}"[:room].rstrip("-")
    return stem + suffix


def next_moment(moment: datetime) -> datetime:
    """The next millisecond: where a launcher tries again when its name is already taken."""
    return moment + timedelta(milliseconds=1)


def is_valid_job_name(name: str) -> bool:
    return len(name) <= MAX_LENGTH and NAME_PATTERN.fullmatch(name) is not None
