"""The backend contract (`tests/jobs/contract.py`) on the embedded backend: real agent, real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from local_setup import LocalSetup

from jobs.contract import BackendContract, ProcessDriver
from lbm.jobs.model import Queue


class LocalDriver(ProcessDriver):
    def __init__(self, setup: LocalSetup):
        super().__init__(setup.root)
        self.setup = setup
        self.backend = setup.backend
        self.region = setup.region()
        self.held_queue = "held"  # no capacity: its jobs wait RUNNABLE


class TestLocalContract(BackendContract):
    @pytest.fixture
    def contract(self, isolated_env: Path) -> Iterator[LocalDriver]:
        setup = LocalSetup(isolated_env, [Queue("wide", "cpu", 4), Queue("held", "cpu", 0)])
        yield LocalDriver(setup)
        setup.clean_up()
