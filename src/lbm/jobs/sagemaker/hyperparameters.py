"""The hyperparameters a SageMaker training job carries from the launcher to the entry point.

SageMaker refuses a hyperparameter value that is exactly 40 characters of `[A-Za-z0-9/+=]` (it could be an
AWS secret key). The launcher escapes every value with `escape_value` and the entry point undoes it with
`restore_value`: such a value, and any value that already starts with the escape mark, gets the mark in
front, so every value comes back exactly as it was sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The names the launcher sets and the entry point reads.
CONFIG_URI = "config-uri"  # the job's resolved config.yaml, s3:// or a path (default: $LBM_CONFIG_URI)
NPROC_PER_NODE = "nproc-per-node"  # training processes per host (default: its GPU count, at least 1)
WANDB_SECRET_ID = "wandb-secret-id"  # the Secrets Manager secret holding the W&B API key
RENDEZVOUS_PORT = "rendezvous-port"  # the port torchrun meets on, on the first host (default 29500)

ESCAPE_MARK = "~"
_LOOKS_LIKE_A_SECRET = re.compile(r"[A-Za-z0-9/+=]{40}")


def escape_value(value: str) -> str:
    """`value` as SageMaker accepts it."""
    if _LOOKS_LIKE_A_SECRET.fullmatch(value) or value.startswith(ESCAPE_MARK):
        return ESCAPE_MARK + value
    return value


def restore_value(value: str) -> str:
    """The value `escape_value` was given."""
    return value[len(ESCAPE_MARK) :] if value.startswith(ESCAPE_MARK) else value


def restore_all(hyperparameters: Mapping[str, str]) -> dict[str, str]:
    """Every value of a training job's hyperparameters restored."""
    return {name: restore_value(value) for name, value in hyperparameters.items()}
