"""Checkpoints: `epoch_<E>-step_<S>.ckpt`, written atomically with a checksum, top-k plus latest kept.

Each checkpoint `X.ckpt` (a `torch.save` file) has a sidecar `X.ckpt.json` holding its SHA-256, step, epoch,
val_loss and the monitored score (`checkpoint.monitor_key`, val_loss by default). The sidecar is written
after the checkpoint is in place, so a checkpoint counts as complete only when its sidecar exists and the
checksum matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lbm.errors import LbmError

log = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d+)-step_(\d+)\.ckpt$")
SIDECAR_SUFFIX = ".json"
MONITOR_MODES = ("min", "max")


def check_monitor(checkpoint: Mapping[str, Any], has_rollouts: bool) -> tuple[str, str]:
    """(`checkpoint.monitor_key`, `checkpoint.mode`): val_loss and min by default, max by default for a
    rollout score, which needs rollouts (LbmError without). The schema checks each value on its own."""
    key = checkpoint.get("monitor_key") or "val_loss"
    mode = checkpoint.get("mode") or ("min" if key == "val_loss" else "max")
    if key != "val_loss" and not has_rollouts:
        raise LbmError(
            f"checkpoint.monitor_key {key!r} needs rollouts, but task.env_runner is not set: monitor val_loss"
        )
    return key, mode


def checkpoint_name(epoch: int, step: int) -> str:
    return f"epoch_{epoch}-step_{step}.ckpt"


def step_of(name: str) -> int:
    """The step in a checkpoint file name."""
    return int(CHECKPOINT_PATTERN.match(name).group(2))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


@dataclass(frozen=True)
class CheckpointInfo:
    """What the sidecar of a complete checkpoint says."""

    path: Path
    step: int
    epoch: int
    val_loss: float | None
    sha256: str
    monitor_key: str = "val_loss"
    score: float | None = None  # the value of monitor_key when it was saved

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + SIDECAR_SUFFIX)


def write_checkpoint(
    state: dict, path: Path, val_loss: float | None, monitor_key: str = "val_loss", score: float | None = None
) -> CheckpointInfo:
    """Save `state` to `path` then its sidecar; both atomically. `score` defaults to val_loss when that is
    what is monitored."""
    _write_atomically(path, lambda f: torch.save(state, f))
    if monitor_key == "val_loss" and score is None:
        score = val_loss
    info = CheckpointInfo(
        path, int(state["step"]), int(state["epoch"]), val_loss, sha256_of(path), monitor_key, score
    )
    record = {
        "sha256": info.sha256,
        "step": info.step,
        "epoch": info.epoch,
        "val_loss": val_loss,
        "monitor_key": monitor_key,
        "score": score,
    }
    _write_atomically(info.sidecar, lambda f: f.write(json.dumps(record).encode()))
    return info


def read_info(path: Path, verify: bool = True) -> CheckpointInfo | None:
    """The checkpoint's info if it is complete (sidecar present, checksum matching), else None."""
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    try:
        record = json.loads(sidecar.read_text())
        monitor_key = record.get("monitor_key", "val_loss")
        score = record.get("score", record["val_loss"] if monitor_key == "val_loss" else None)
        info = CheckpointInfo(
            path, record["step"], record["epoch"], record["val_loss"], record["sha256"], monitor_key, score
        )
    except (OSError, ValueError, KeyError):
        return None
    if verify and (not path.exists() or sha256_of(path) != info.sha256):
        return None
    return info


def checkpoints_in(directory: Path) -> list[Path]:
    """Checkpoint files in `directory` by name, newest step first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: step_of(p.name), reverse=True)


def latest_complete(directory: Path) -> CheckpointInfo | None:
    """The newest complete checkpoint; truncated or corrupt ones are skipped with a warning."""
    for path in checkpoints_in(directory):
        info = read_info(path)
        if info is not None:
            return info
        log.warning("skipping checkpoint %s: incomplete or corrupt (checksum does not match)", path.name)
    return None


def load_checkpoint(path: Path, expected_sha256: str | None = None) -> dict:
    """Load a checkpoint saved by `write_checkpoint` onto the CPU."""
    if expected_sha256 is not None and sha256_of(path) != expected_sha256:
        raise ValueError(f"checkpoint {path} does not match its checksum")
    return torch.load(path, map_location="cpu", weights_only=False)


def snapshot(obj: Any) -> Any:
    """A copy of a (nested) state dict whose tensors no later optimizer step can change."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(snapshot(v) for v in obj)
    return obj


class CheckpointKeeper:
    """Writes checkpoints on a background thread and keeps the top-k by their monitored score plus the latest.

    The score is `monitor_key`'s value (val_loss by default; e.g. test_mean_score with mode "max"), lowest
    first with mode "min", highest first with "max"; checkpoints saved without one (or monitoring another
    key) are kept only while they are the latest. `on_written(info)` and `on_removed(path)` let the caller
    mirror the directory elsewhere (uploads).
    """

    def __init__(
        self,
        directory: Path,
        topk: int,
        on_written: Callable[[CheckpointInfo], None] = lambda info: None,
        on_removed: Callable[[Path], None] = lambda path: None,
        monitor_key: str = "val_loss",
        mode: str = "min",
    ):
        if mode not in MONITOR_MODES:
            raise LbmError(f"checkpoint.mode {mode!r} is not known: use min or max")
        self.directory = directory
        self.topk = topk
        self.monitor_key = monitor_key
        self.mode = mode
        self.on_written = on_written
        self.on_removed = on_removed
        self._kept: list[CheckpointInfo] = [
            info for p in checkpoints_in(directory) if (info := read_info(p, verify=False)) is not None
        ]
        for partial in directory.glob(".epoch_*.partial"):
            partial.unlink()  # a write that a killed run left unfinished
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(
        self, state: dict, val_loss: float | None, score: float | None = None, background: bool = True
    ) -> None:
        """Write `state` (already a snapshot) as a checkpoint; waits for the previous write first."""
        self.wait()
        path = self.directory / checkpoint_name(int(state["epoch"]), int(state["step"]))
        if not background:
            self._write(state, path, val_loss, score)
            return
        self._thread = threading.Thread(
            target=self._write_catching, args=(state, path, val_loss, score), daemon=True
        )
        self._thread.start()

    def wait(self) -> None:
        """Block until the write in flight (if any) is complete; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write_catching(self, state: dict, path: Path, val_loss: float | None, score: float | None) -> None:
        try:
            self._write(state, path, val_loss, score)
        except BaseException as error:  # noqa: BLE001 - re-raised on the training thread by wait()
            self._error = error

    def _write(self, state: dict, path: Path, val_loss: float | None, score: float | None) -> None:
        info = write_checkpoint(state, path, val_loss, self.monitor_key, score)
        self._kept = [k for k in self._kept if k.path != path] + [info]
        self.on_written(info)
        removed = self._to_remove()
        for old in removed:
            for file in (old.path, old.sidecar):
                file.unlink(missing_ok=True)
            self.on_removed(old.path)
        self._kept = [k for k in self._kept if k not in removed]

    def _to_remove(self) -> list[CheckpointInfo]:
        latest = max(self._kept, key=lambda k: k.step)
        sign = 1 if self.mode == "min" else -1
        scored = sorted(
            (k for k in self._kept if k.monitor_key == self.monitor_key and k.score is not None),
            key=lambda k: (sign * k.score, -k.step),
        )
        keep = {latest.path} | {k.path for k in scored[: self.topk]}
        return [k for k in self._kept if k.path not in keep]
