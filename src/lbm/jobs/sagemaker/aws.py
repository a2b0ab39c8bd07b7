"""boto3 clients for one region and profile: throttled calls retried with backoff, credential and AWS
errors as one line (LbmError).

The profile is `AWS_PROFILE` (which `--profile` sets) and the endpoint `AWS_ENDPOINT_URL` when set, as
boto3 reads them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lbm.errors import LbmError

# botocore's "standard" retry mode: throttling and transient errors, exponential backoff with jitter.
MAX_ATTEMPTS = 8
EXPIRED_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
    }
)
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)


class AwsClients:
    """One boto3 session for `region` (and `profile`, else AWS_PROFILE); a client per service."""

    def __init__(self, region: str, profile: str | None = None):
        import boto3
        import botocore.exceptions

        self.region = region
        try:
            self.session = boto3.Session(region_name=region, profile_name=profile)
        except botocore.exceptions.ProfileNotFound as error:
            raise LbmError(f"{error}; configure it (aws configure sso) or pass another --profile") from None
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS})
            with self.errors():
                self._clients[service] = self.session.client(service, config=config)
        return self._clients[service]

    def login_hint(self) -> str:
        profile = self.session.profile_name
        return f"aws sso login --profile {profile}" if profile != "default" else "aws sso login"

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn what AWS refuses (expired or missing credentials, throttling past the retries, denied
        requests) into one LbmError line; other errors are bugs and keep their traceback."""
        import botocore.exceptions as aws

        try:
            yield
        except (aws.TokenRetrievalError, aws.SSOTokenLoadError, aws.UnauthorizedSSOTokenError):
            raise LbmError(f"your AWS login has expired; log in again: {self.login_hint()}") from None
        except aws.NoCredentialsError:
            raise LbmError(f"no AWS credentials found; log in: {self.login_hint()}") from None
        except aws.EndpointConnectionError as error:
            raise LbmError(f"cannot reach AWS: {error}") from None
        except aws.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            message = " ".join(str(error.response.get("Error", {}).get("Message", "")).split())
            operation = error.operation_name
            if code in EXPIRED_CODES:
                raise LbmError(
                    f"your AWS credentials have expired or are not valid ({code}); log in again: "
                    f"{self.login_hint()}"
                ) from None
            if code in THROTTLING_CODES:
                raise LbmError(
                    f"AWS kept throttling {operation} after {MAX_ATTEMPTS} tries; try again in a minute"
                ) from None
            raise LbmError(f"AWS refused {operation} in {self.region}: {code}: {message}") from None
