"""Sweep fixtures: `lab`, a fresh user machine whose queue runs 3 jobs at once (see `e2e.e2e_lab.Lab`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.e2e_lab import Lab, lab_machine

QUEUE_CAPACITY = 3


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A fresh user machine; its queue runs more jobs at once than the sweeps' agents, so the agents are
    what limits them."""
    with lab_machine(tmp_path, monkeypatch) as lab:
        lab.use_bucket(f"file://{lab.bucket}", capacity=QUEUE_CAPACITY)
        assert lab.backend is not None  # the lab stops its agent at the end only once it has a backend
        yield lab


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """An SQLAlchemy URL of a PostgreSQL server this test session starts (skipped without the binaries)."""
    from postgres_server import postgres_bin, postgres_server

    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    with postgres_server() as url:
        yield url
