"""Fixtures of the SageMaker backend's tests: moto (S3, SageMaker, CloudWatch Logs, STS) for what it
emulates, and the checked Stubber for AWS Batch service jobs, which moto lacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_emulator import BatchEmulator, EmulatedQueue
from sagemaker_harness import AWS_CAPACITY, REGION, TEAM_QUEUE, CheckedStubber, site_yaml

from lbm.jobs.sagemaker.aws import AwsClients


@pytest.fixture
def aws(moto_endpoint: str) -> AwsClients:
    """Clients for us-east-1 that reach the moto server (SageMaker, CloudWatch Logs, S3, STS)."""
    return AwsClients(REGION)


@pytest.fixture
def batch(aws: AwsClients) -> Iterator[CheckedStubber]:
    """The Stubber on `aws`'s Batch client, active for the test; every queued response must be used."""
    stubber = CheckedStubber(aws.client("batch"))
    with stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def batch_emulator(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchEmulator]:
    """The Batch emulator with the site's queues, reached through AWS_ENDPOINT_URL_BATCH (by this process
    and the ones it starts); no request it got may have been refused."""
    queues = [EmulatedQueue(name, name != TEAM_QUEUE, AWS_CAPACITY[name]) for name in AWS_CAPACITY]
    emulator = BatchEmulator(queues)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", emulator.url)
    yield emulator
    emulator.close()
    assert emulator.refused == []


@pytest.fixture
def sagemaker_site(s3_bucket, batch_emulator, tmp_path, monkeypatch) -> Path:
    """The two-region SageMaker site on the moto bucket, as $LBM_SITE; user settings in a temp dir."""
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(s3_bucket[0]))
    monkeypatch.setenv("LBM_SITE", str(path))
    monkeypatch.setenv("LBM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LBM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    return path
