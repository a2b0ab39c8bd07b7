"""Fixtures for dataset tests: a moto S3 server process, fresh buckets, small synthetic datasets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from lbm.train.data.synthetic import write_synthetic_dataset

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a moto S3 server process on 127.0.0.1, with dummy AWS credentials in the environment."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("wb")
    env = {**os.environ, **S3_CREDENTIALS}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto server did not start on {endpoint}") from None
            time.sleep(0.1)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in S3_CREDENTIALS.items():
            patch.setenv(name, value)
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        yield endpoint
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> tuple[str, dict]:
    """(s3://<new bucket>, storage_options that reach it)."""
    bucket = f"lbm-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}", {"endpoint_url": moto_endpoint, "key": "testing", "secret": "testing"}


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
