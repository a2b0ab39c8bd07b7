"""Which checkpoint a run resumes from: an explicit one, else the newest complete one in the output dir,
else the newest complete one uploaded to the artifact URL (a retry on a fresh machine)."""

from __future__ import annotations

from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem
from omegaconf import DictConfig

from lbm.errors import LbmError
from lbm.storage import transfer
from lbm.train import checkpoint as ckpt


def check_explicit(training: DictConfig) -> None:
    """`training.resume_checkpoint_path`, when set, must exist (checked before anything is written)."""
    url = training.get("resume_checkpoint_path")
    if url:
        fs, path = fsspec.core.url_to_fs(str(url))
        if not fs.exists(path):
            raise LbmError(f"training.resume_checkpoint_path {url!r} does not exist")


def resume_checkpoint(
    training: DictConfig, output_dir: Path, artifact_uri: str | None
) -> tuple[Path, str | None] | None:
    """(local path, expected SHA-256 when known) of the checkpoint to resume from, or None to start fresh."""
    explicit = training.get("resume_checkpoint_path")
    if explicit:
        return _fetch_explicit(str(explicit), output_dir)
    if not training.get("resume", True):
        return None
    local = ckpt.latest_complete(output_dir)
    if local is None and artifact_uri:
        local = _fetch_uploaded(artifact_uri, output_dir)
    return (local.path, local.sha256) if local is not None else None


def _fetch_explicit(url: str, output_dir: Path) -> tuple[Path, str | None]:
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        local = Path(path)
    else:
        local = transfer.download(url, output_dir / "resume" / Path(path).name)
    info = ckpt.read_info(local, verify=False)
    return local, info.sha256 if info is not None else None


def _fetch_uploaded(artifact_uri: str, output_dir: Path) -> ckpt.CheckpointInfo | None:
    """Copy the newest complete uploaded checkpoint (with its sidecar) into the output dir."""
    names = transfer.list_names(artifact_uri)
    candidates = [n for n in names if ckpt.CHECKPOINT_PATTERN.match(n) and n + ckpt.SIDECAR_SUFFIX in names]
    for name in sorted(
        candidates, key=lambda n: int(ckpt.CHECKPOINT_PATTERN.match(n).group(2)), reverse=True
    ):
        for file in (name, name + ckpt.SIDECAR_SUFFIX):
            transfer.download(transfer.join(artifact_uri, file), output_dir / file)
        info = ckpt.read_info(output_dir / name)
        if info is not None:
            return info
    return None
