"""End-to-end fixtures: `lab`, a fresh user machine per test (see `e2e_lab.Lab`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_lab import Lab, lab_machine


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A fresh user machine for one test (see `Lab`); its jobs and agent are stopped at the end."""
    with lab_machine(tmp_path, monkeypatch) as lab:
        yield lab
