"""End-to-end fixtures: `lab`, a fresh user machine per test (see `e2e_lab.Lab`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_lab import Lab


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A fresh user machine for one test (see `Lab`); its jobs and agent are stopped at the end."""
    gitconfig = tmp_path / "gitconfig"
    subprocess.run(
        ["git", "config", "--file", str(gitconfig), "user.email", "Jane.Doe@example.com"], check=True
    )
    (tmp_path / "work").mkdir()
    env = {
        "LBM_HOME": str(tmp_path / "home"),
        "LBM_DATA_DIR": str(tmp_path / "data"),
        "LBM_CONFIG_DIR": str(tmp_path / "config"),
        "LBM_SITE": str(tmp_path / "site.yaml"),
        "LBM_STOP_GRACE_S": "2",
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "NETRC": str(tmp_path / "no-netrc"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_API_KEY", "AWS_PROFILE", "LBM_SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path / "work")
    lab = Lab(tmp_path)
    lab.use_bucket(f"file://{lab.bucket}")
    try:
        yield lab
    finally:
        lab.clean_up()
