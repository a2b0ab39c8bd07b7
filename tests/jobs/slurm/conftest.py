"""One real Slurm cluster for the whole session (see `slurm_test_cluster.py`), SLURM_CONF pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slurm_test_cluster import SlurmCluster, available


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The started cluster; its daemons are stopped when the session ends (or when starting fails)."""
    problem = available()
    if problem:
        pytest.skip(problem)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster.env.items():
            patch.setenv(name, value)
        try:
            yield cluster
        finally:
            cluster.stop()
