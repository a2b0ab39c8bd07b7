"""The agent `kill -9`ed 50 times at random moments while 40 short jobs run: nothing lost or run twice.

The driver is the benchmark's (`benchmarks/agent_kill_soak.py`), so the figure in BENCHMARKS.md and this test
check the same invariants.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent_kill_soak import run_soak


@pytest.mark.slow
def test_forty_jobs_survive_fifty_agent_kills_each_ending_exactly_once(isolated_env: Path):
    seed = random.randrange(2**32)

    report = run_soak(isolated_env / "soak", jobs=40, kills=50, seed=seed)

    assert report.violations == [], report.summary()
    assert (report.kills, report.jobs, report.findings.lost, report.findings.duplicates) == (50, 40, 0, 0)
    assert report.adopted > 0, "no kill found an attempt running: the kills missed the jobs"
