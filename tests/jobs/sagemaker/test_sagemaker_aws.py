"""AWS calls as a user meets them: throttling retried with backoff (botocore's, against the Batch emulator
answering ThrottlingException over HTTP), and expired logins, missing profiles and refusals as one line."""

from __future__ import annotations

import pytest
from botocore.stub import Stubber
from sagemaker_harness import QUEUE

from lbm.errors import LbmError
from lbm.jobs.sagemaker.aws import AwsClients

SSO_PROFILE = """[profile sagemaker]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
sso_account_id = 123456789012
sso_role_name = Researcher
region = us-east-1
"""


@pytest.fixture
def aws_home(tmp_path, monkeypatch):
    """An AWS config with one SSO profile `sagemaker` that has never logged in, and no other credentials."""
    config = tmp_path / "config"
    config.write_text(SSO_PROFILE)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_a_throttled_request_is_retried_with_backoff(batch_emulator):
    batch_emulator.throttle = 2
    aws = AwsClients("us-east-1")
    with aws.errors():
        answer = aws.client("batch").describe_job_queues(jobQueues=[QUEUE])
    assert [q["jobQueueName"] for q in answer["jobQueues"]] == [QUEUE]
    assert answer["ResponseMetadata"]["RetryAttempts"] == 2
    assert batch_emulator.throttle == 0 and [op for op, _ in batch_emulator.requests] == ["DescribeJobQueues"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "ExpiredTokenException",
            r"your AWS credentials have expired or are not valid \(ExpiredTokenException\); "
            r"log in again: aws sso login --profile sagemaker",
        ),
        (
            "ThrottlingException",
            r"AWS kept throttling DescribeServiceJob after 8 tries; try again in a minute",
        ),
        (
            "AccessDeniedException",
            r"AWS refused DescribeServiceJob in us-east-1: AccessDeniedException: not you",
        ),
    ],
)
def test_aws_errors_are_one_line(aws_home, monkeypatch, code, message):
    monkeypatch.setenv("AWS_PROFILE", "sagemaker")
    aws = AwsClients("us-east-1")
    with Stubber(aws.client("batch")) as stubber:
        stubber.add_client_error("describe_service_job", service_error_code=code, service_message="not you")
        with pytest.raises(LbmError, match=f"^{message}$"), aws.errors():
            aws.client("batch").describe_service_job(jobId="x")


def test_an_sso_profile_without_a_valid_login_says_to_log_in(aws_home):
    aws = AwsClients("us-east-1", profile="sagemaker")
    with (
        pytest.raises(
            LbmError, match=r"^your AWS login has expired; log in again: aws sso login --profile sagemaker$"
        ),
        aws.errors(),
    ):
        aws.client("sts").get_caller_identity()


def test_an_unknown_profile_is_one_line(aws_home):
    with pytest.raises(LbmError, match=r"The config profile \(nobody\) could not be found; configure it"):
        AwsClients("us-east-1", profile="nobody")


def test_sts_answers_on_moto(moto_endpoint):
    aws = AwsClients("us-east-1")
    with aws.errors():
        assert aws.client("sts").get_caller_identity()["Account"] == "123456789012"
