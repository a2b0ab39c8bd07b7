"""Commands that list, look or launch never import torch (they must start in well under a second)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the commands in one process, then reports which heavy modules each group of commands had loaded.
PROGRAM = """
import contextlib, io, json, sys
from lbm.cli import batchy, sagey
from lbm.cli.main import main as lbm

HEAVY = ("torch", "torchvision", "transformers", "diffusers", "hydra", "omegaconf")
loaded = {}
out = io.StringIO()
with contextlib.redirect_stdout(out):
    codes = [sagey.main(["ls"]), sagey.main(["usage"]), batchy.main(["list-queues"])]
    codes.append(batchy.main(["ls", "local-cpu"]))
    loaded["sagey, batchy"] = sorted(m for m in HEAVY if m in sys.modules)
    try:
        lbm(["launch", "--help"])
    except SystemExit as done:
        codes.append(done.code)
    loaded["lbm launch --help"] = sorted(m for m in HEAVY if m in sys.modules)
    codes.append(lbm(["launch", "--config-file", "train_diffusion_unet_keypoints_lang_tiny", "--dry-run"]))
    loaded["lbm launch --dry-run"] = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An empty user: fresh LBM_HOME and config dir, the built-in site."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LBM_HOME": str(tmp_path / "home"),
        "LBM_CONFIG_DIR": str(tmp_path / "config"),
        "NETRC": str(tmp_path / "no-netrc"),
    }


def test_listing_and_launch_commands_import_no_torch(env: dict[str, str], tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["codes"] == [0, 0, 0, 0, 0, 0]
    assert report["loaded"] == {
        "sagey, batchy": [],
        "lbm launch --help": [],
        "lbm launch --dry-run": ["hydra", "omegaconf"],
    }
