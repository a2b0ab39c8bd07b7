"""`lbm train` of the tiny config as a real process, as the training tests start it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TINY = "train_diffusion_unet_keypoints_lang_tiny"
# A shorter run of the tiny config for the tests that are about mechanics, not learning.
QUICK = (
    "task.synthesize.episodes_per_task=4",
    "dataloader.batch_size=16",
    "val_dataloader.batch_size=32",
    "training.log_every=2",
    "checkpoint.every_n_steps=4",
    "task.env_runner.n_test=2",
)


def lbm_train(out: Path, *overrides: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """`python -m lbm.cli.train --config-file TINY --output-dir out overrides...`, started (text mode)."""
    command = [
        sys.executable,
        "-m",
        "lbm.cli.train",
        "--config-file",
        TINY,
        "--output-dir",
        str(out),
        *overrides,
    ]
    return subprocess.Popen(command, env=env, text=True, **popen)
