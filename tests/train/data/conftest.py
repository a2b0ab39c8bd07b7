"""Fixtures for dataset tests: small synthetic datasets (the S3 fixtures are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbm.train.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="session")
def small_shape_meta() -> dict:
    """shape_meta of `small_dataset`."""
    return {
        "obs": {
            "image": {"shape": [3, 24, 24], "type": "rgb"},
            "agent_pos": {"shape": [2], "type": "low_dim"},
        },
        "action": {"shape": [2]},
    }


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset: 3 tasks x 4 episodes of 24 x 24 images (read-only for tests)."""
    path = tmp_path_factory.mktemp("data") / "small.zarr"
    write_synthetic_dataset(str(path), num_tasks=3, episodes_per_task=4, image_size=24, seed=3)
    return path
