"""Fixtures: an isolated environment and a tmp $LBM_HOME whose agent (and jobs) are killed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from local_setup import LocalSetup

from lbm.jobs.model import Queue


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user site, W&B key, .netrc or webhook leaks in; agents stop quickly after SIGTERM."""
    monkeypatch.setenv("LBM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LBM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("LBM_STOP_GRACE_S", "1")
    for name in ("LBM_SITE", "WANDB_API_KEY", "AWS_DEFAULT_REGION", "LBM_SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def local(isolated_env: Path) -> Iterator[LocalSetup]:
    """Queues `solo` (1 slot), `wide` (4 slots) and `held` (0 slots: its jobs wait)."""
    setup = LocalSetup(
        isolated_env,
        [Queue("solo", "cpu", 1), Queue("wide", "cpu", 4), Queue("held", "cpu", 0)],
    )
    yield setup
    setup.clean_up()
