"""Open a Weights & Biases run for `logging.mode` online or offline (disabled: no run, no import)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lbm.errors import LbmError
from lbm.train.config.schema import LOGGING_MODES


def run_id(name: str) -> str:
    """A W&B run id derived from the run name, so a resumed job continues the same run."""
    return re.sub(r"[^a-zA-Z0-9_-]", "-", name)[:64]


def check_logging_mode(logging_cfg: DictConfig) -> None:
    mode = logging_cfg.get("mode", "disabled")
    if mode not in LOGGING_MODES:
        raise LbmError(f"logging.mode={mode!r} is not valid: use one of {', '.join(LOGGING_MODES)}")


def start_wandb(cfg: DictConfig, output_dir: Path) -> Any | None:
    """The W&B run for this training run, or None when logging is disabled."""
    logging_cfg = cfg.logging
    check_logging_mode(logging_cfg)
    mode = logging_cfg.get("mode", "disabled")
    if mode == "disabled":
        return None
    import wandb

    name = logging_cfg.get("name") or output_dir.name
    run = wandb.init(
        project=logging_cfg.get("project"),
        name=name,
        group=logging_cfg.get("group"),
        tags=list(logging_cfg.get("tags") or []),
        mode=mode,
        dir=str(output_dir),
        id=run_id(name),
        resume="allow",
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    if mode == "online" and run.url:
        print(f"W&B run: {run.url}", flush=True)
    return run
