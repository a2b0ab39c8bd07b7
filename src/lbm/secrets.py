"""Secrets a job needs (the W&B API key, AWS credentials) and the redaction that keeps them out of logs and
archives."""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import AnyStr

WANDB_HOST = "api.wandb.ai"
REDACTED = "[REDACTED]"
SECRET_ENV_NAMES = ("WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# What a job gets from its submitter only, never from the environment of the process that starts it: the
# W&B key and the AWS credentials (and profile) the job reads and writes the bucket with.
AWS_CREDENTIAL_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
SUBMITTER_SECRET_NAMES = ("WANDB_API_KEY", *AWS_CREDENTIAL_NAMES)


def wandb_api_key() -> str | None:
    """The W&B API key: $WANDB_API_KEY, else the password for api.wandb.ai in ~/.netrc ($NETRC), else None."""
    key = os.environ.get("WANDB_API_KEY")
    if key:
        return key
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        entry = netrc.netrc(os.fspath(path)).authenticators(WANDB_HOST)
    except (OSError, netrc.NetrcParseError):
        return None
    if entry is None:
        return None
    return entry[2] or None


def submitter_secrets() -> dict[str, str]:
    """What this process hands a job it submits: its W&B key and its AWS credentials, those it has."""
    secrets = {name: os.environ[name] for name in AWS_CREDENTIAL_NAMES if os.environ.get(name)}
    key = wandb_api_key()
    if key:
        secrets["WANDB_API_KEY"] = key
    return secrets


def redact(text: AnyStr, secrets: Iterable[AnyStr]) -> AnyStr:
    """`text` with every occurrence of each (non-empty) secret replaced by [REDACTED] (str or bytes alike)."""
    marker = REDACTED if isinstance(text, str) else REDACTED.encode()
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, marker)
    return text


def secret_env_names(env: Mapping[str, str]) -> list[str]:
    """The names in `env` that hold secrets lbm knows of (W&B key, AWS secret key and session token)."""
    return [name for name in SECRET_ENV_NAMES if env.get(name)]
