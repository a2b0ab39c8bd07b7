"""Fixtures of the SageMaker backend's tests: moto (S3, SageMaker, CloudWatch Logs, STS) for what it
emulates, and the checked Stubber for AWS Batch service jobs, which moto lacks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sagemaker_harness import REGION, CheckedStubber

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
