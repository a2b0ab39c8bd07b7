"""The Slurm benchmarks' cluster: the test suite's real one (`tests/jobs/slurm/slurm_test_cluster.py`),
started in a temp dir with this process's environment pointed at it (SLURM_CONF, LBM_HOME, a site file)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "jobs" / "slurm")]

from slurm_test_cluster import SlurmCluster, available  # noqa: E402

SITE = """\
defaultRegion: cluster
regions:
  cluster:
    backend: slurm
    bucket: file://{root}/bucket
    prefix: outputs
    queues:
      - {{name: debug, instanceType: cpu, capacity: 1, slurm: {{partition: debug}}}}
"""


@contextlib.contextmanager
def bench_cluster(**options) -> Iterator[tuple[SlurmCluster, Path]]:
    """(started cluster, temp root); os.environ points lbm and Slurm's commands at them until the end."""
    problem = available()
    if problem:
        sys.exit(problem)
    with tempfile.TemporaryDirectory(prefix="lbm-slurm-bench-") as tmp:
        root = Path(tmp)
        cluster = SlurmCluster(root / "cluster", **options).start()
        try:
            gitconfig = root / "gitconfig"
            subprocess.run(
                ["git", "config", "--file", str(gitconfig), "user.email", "bench@example.com"], check=True
            )
            (root / "site.yaml").write_text(SITE.format(root=root))
            os.environ.update(
                cluster.env,
                LBM_HOME=str(root / "home"),
                LBM_SITE=str(root / "site.yaml"),
                LBM_DATA_DIR=str(root / "data"),
                LBM_CONFIG_DIR=str(root / "config"),
                GIT_CONFIG_GLOBAL=str(gitconfig),
                GIT_CONFIG_NOSYSTEM="1",
                NETRC=str(root / "no-netrc"),
                OMP_NUM_THREADS="1",
            )
            os.environ.pop("WANDB_API_KEY", None)
            yield cluster, root
        finally:
            cluster.stop()
