"""The end-of-job archive `<artifact>/output/output.tar.gz`: attempt logs, metrics.jsonl and the W&B folder.

Every member is redacted (the secrets given are replaced by [REDACTED]) before it is written.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

from lbm.secrets import redact
from lbm.storage.layout import METRICS_FILE, archive_uri


def archive_members(output_dir: Path, logs: Iterable[Path]) -> list[tuple[Path, str]]:
    """(file, name in the archive): the logs under `logs/`, `metrics.jsonl`, and `wandb/` when present."""
    members = [(path, f"logs/{path.name}") for path in logs if path.is_file()]
    metrics = output_dir / METRICS_FILE
    if metrics.is_file():
        members.append((metrics, METRICS_FILE))
    wandb_dir = output_dir / "wandb"
    if wandb_dir.is_dir():
        for path in sorted(wandb_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                members.append((path, f"wandb/{path.relative_to(wandb_dir).as_posix()}"))
    return members


def write_archive(dest: Path, members: Iterable[tuple[Path, str]], secrets: Iterable[str]) -> Path:
    """Write a gzipped tar of `members` to `dest` with the secrets redacted in every file."""
    secret_bytes = [s.encode() for s in secrets if s]
    with tarfile.open(dest, "w:gz") as tar:
        for path, name in members:
            try:
                data = redact(path.read_bytes(), secret_bytes)
                mtime = path.stat().st_mtime
            except OSError:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(mtime)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest


def upload_archive(output_dir: Path, logs: Iterable[Path], artifact_uri: str, secrets: Iterable[str]) -> str:
    """Build the job's archive next to its outputs and upload it (verified); the URL it was uploaded to."""
    from lbm.storage.transfer import upload_verified

    url = archive_uri(artifact_uri)
    output_dir.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".output-", suffix=".tar.gz", dir=output_dir)
    os.close(fd)
    try:
        write_archive(Path(temp), archive_members(output_dir, logs), secrets)
        upload_verified(temp, url)
    finally:
        Path(temp).unlink(missing_ok=True)
    return url
