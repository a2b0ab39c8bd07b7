"""Fixtures shared by every test folder: a moto server process (S3, SageMaker, CloudWatch Logs, STS and
the other services moto emulates) and fresh buckets on it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ports import free_port

# Dummy credentials moto accepts; distinctive values, because lbm redacts AWS_SECRET_ACCESS_KEY from logs.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "lbm-test-access-key",
    "AWS_SECRET_ACCESS_KEY": "lbm-test-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a moto server process (`moto_server` of this installation, every service) on 127.0.0.1."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
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
    yield endpoint
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture
def moto_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto server's URL, with AWS_ENDPOINT_URL and dummy credentials in this test's environment
    (so boto3, s3fs and every process the test starts reach it)."""
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_server


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> tuple[str, dict]:
    """(s3://<new bucket>, storage_options that reach it)."""
    bucket = f"lbm-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    options = {
        "endpoint_url": moto_endpoint,
        "key": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "secret": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }
    return f"s3://{bucket}", options
