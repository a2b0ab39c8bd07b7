"""A trained policy from one checkpoint file (local path or URL), built from the config stored in it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from omegaconf import DictConfig, OmegaConf

from lbm.errors import LbmError
from lbm.storage import transfer
from lbm.train import checkpoint as ckpt


def ema_weights_into(policy: torch.nn.Module, ema_state: dict) -> None:
    """Replace `policy`'s parameters by the EMA weights of an EMAModel state dict."""
    from diffusers.training_utils import EMAModel

    ema = EMAModel(policy.parameters())
    ema.load_state_dict(ema_state)
    ema.copy_to(policy.parameters())


def read_checkpoint(url: str) -> dict:
    """The state saved in the checkpoint at `url`, checked against its sidecar's checksum when it has one."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise LbmError(f"checkpoint {url!r} does not exist")
    if isinstance(fs, LocalFileSystem):
        local = Path(path)
        info = ckpt.read_info(local, verify=False)
        return _load(local, info.sha256 if info is not None else None, url)
    with tempfile.TemporaryDirectory(prefix="lbm-checkpoint-") as directory:
        local = transfer.download(url, Path(directory) / Path(path).name)
        sidecar = path + ckpt.SIDECAR_SUFFIX
        if fs.exists(sidecar):
            transfer.download(url + ckpt.SIDECAR_SUFFIX, Path(directory) / Path(sidecar).name)
        info = ckpt.read_info(local, verify=False)
        return _load(local, info.sha256 if info is not None else None, url)


def _load(local: Path, sha256: str | None, url: str) -> dict:
    try:
        state = ckpt.load_checkpoint(local, sha256)
    except ValueError as error:
        raise LbmError(f"checkpoint {url!r} is corrupt: {error}") from None
    except Exception as error:  # noqa: BLE001 - whatever torch.load raises on a file that is not a checkpoint
        raise LbmError(f"{url!r} is not an lbm checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise LbmError(f"{url!r} is not an lbm checkpoint (it lacks the model or its config)")
    return state


def load_policy(url: str, use_ema: bool = True, device: str = "cpu") -> tuple[torch.nn.Module, DictConfig]:
    """(policy in eval mode with the checkpoint's weights, EMA ones where saved and `use_ema`, its config)."""
    from lbm.train.trainer import build

    state = read_checkpoint(url)
    cfg = OmegaConf.create(state["config"])
    policy = build(cfg.policy)
    policy.load_state_dict(state["model"])
    if use_ema and state.get("ema") is not None:
        ema_weights_into(policy, state["ema"])
    return policy.to(device).eval(), cfg
