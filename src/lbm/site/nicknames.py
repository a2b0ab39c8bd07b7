"""A user's queue nicknames (`batchy add-nickname p5 fss-ml-p5-48xlarge-us-east-1`).

Kept in `<user config dir>/lbm/nicknames.yaml` ($LBM_CONFIG_DIR/nicknames.yaml when set), on top of the
nicknames the site file gives its queues.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lbm.errors import LbmError
from lbm.site import config_dir

if TYPE_CHECKING:
    from lbm.jobs.model import Queue
    from lbm.jobs.region import Region

_NICKNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def nicknames_path() -> Path:
    return config_dir() / "nicknames.yaml"


def user_nicknames() -> dict[str, str]:
    """The user's nickname → queue name map (empty when none are saved)."""
    path = nicknames_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise LbmError(
            f"nicknames file {path}: cannot read it as YAML: {' '.join(str(error).split())}"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise LbmError(f"nicknames file {path}: must map nicknames to queue names; fix or delete it")
    return {str(k): v for k, v in data.items()}


def nicknames_for(region: Region) -> dict[str, str]:
    """Every nickname usable in `region` (the site's, then the user's) → queue name."""
    names = {q.name for q in region.queues}
    return {**region.nicknames, **{k: v for k, v in user_nicknames().items() if v in names}}


def resolve_queue(region: Region, name_or_nickname: str) -> Queue:
    """The region's queue with this name, user nickname or site nickname."""
    name = user_nicknames().get(name_or_nickname, name_or_nickname)
    name = region.nicknames.get(name, name)
    for queue in region.queues:
        if queue.name == name:
            return queue
    known = ", ".join(q.name for q in region.queues)
    nicknames = ", ".join(nicknames_for(region)) or "none"
    raise LbmError(
        f"unknown queue or nickname {name_or_nickname!r} in region {region.name}; "
        f"queues: {known}; nicknames: {nicknames} (add one with `batchy add-nickname NICK QUEUE`)"
    )


def add_nickname(region: Region, nickname: str, queue_name: str) -> Path:
    """Save `nickname` for the region's queue `queue_name` (replacing an earlier one); the file written."""
    if not _NICKNAME.fullmatch(nickname):
        raise LbmError(
            f"nickname {nickname!r} is not valid: use letters, digits, '.', '_', '-' (at most 63 characters)"
        )
    queue = resolve_queue(region, queue_name)
    if nickname != queue.name and any(q.name == nickname for q in region.queues):
        raise LbmError(f"nickname {nickname!r} is already the name of a queue in region {region.name}")
    import yaml

    saved = {**user_nicknames(), nickname: queue.name}
    path = nicknames_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".nicknames-", delete=False) as file:
        yaml.safe_dump(saved, file, sort_keys=True)
    os.replace(file.name, path)
    return path
