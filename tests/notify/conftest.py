"""The Slack webhook stand-in (`tests/webhook.py`) as a fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from webhook import Webhook, serving_webhook


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with serving_webhook() as hook:
        yield hook
