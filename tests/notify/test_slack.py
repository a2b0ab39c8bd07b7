"""Slack notifications posted to a real local HTTP server; failures are logged without the URL."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from lbm.jobs.region import SlackSettings
from lbm.notify.slack import JobEvent, SlackNotifier, webhook_url

EVENT = JobEvent("ann-lbm-training-1", "ann", "local-cpu", "FAILED", "exit code 3", "file:///b/ann-lbm/j/")


def test_posts_job_owner_queue_state_and_reason(webhook):
    notifier = SlackNotifier(webhook.url, ["RUNNING", "FAILED"])

    assert notifier.send(EVENT)

    [payload] = webhook.payloads
    assert payload["text"].startswith(
        "Job ann-lbm-training-1 is FAILED (owner ann, queue local-cpu): exit code 3"
    )
    assert "file:///b/ann-lbm/j/" in payload["text"]
    assert notifier.wants("FAILED") and not notifier.wants("SUCCEEDED")
    assert webhook.url not in repr(notifier)


def test_rejected_post_is_logged_without_the_url(webhook, caplog: pytest.LogCaptureFixture):
    webhook.status = 403
    caplog.set_level(logging.DEBUG)

    assert not SlackNotifier(webhook.url, ["FAILED"]).send(EVENT)

    assert "slack notification for job ann-lbm-training-1 failed: HTTP 403" in caplog.text
    assert "secret-token" not in caplog.text


def test_unreachable_webhook_is_logged_without_the_url(caplog: pytest.LogCaptureFixture):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/secret-token"
    caplog.set_level(logging.DEBUG)

    assert not SlackNotifier(url, ["FAILED"], timeout_s=2).send(EVENT)

    assert "slack notification for job ann-lbm-training-1 failed:" in caplog.text
    assert "secret-token" not in caplog.text


def test_url_comes_from_the_variable_else_the_file(tmp_path: Path):
    hook_file = tmp_path / "hook"
    hook_file.write_text("https://hooks.example/from-file\n")
    settings = SlackSettings(webhook_url_env="MY_HOOK", webhook_url_file=str(hook_file))

    assert (
        webhook_url(settings, {"MY_HOOK": "https://hooks.example/from-env"})
        == "https://hooks.example/from-env"
    )
    assert webhook_url(settings, {}) == "https://hooks.example/from-file"
    assert webhook_url(SlackSettings(webhook_url_env="MY_HOOK"), {}) is None


def test_no_notifier_without_settings_or_url(caplog: pytest.LogCaptureFixture):
    assert SlackNotifier.from_settings(None) is None
    assert SlackNotifier.from_settings(SlackSettings(webhook_url_env="LBM_TEST_UNSET_HOOK"), {}) is None
    assert "no webhook URL was found in LBM_TEST_UNSET_HOOK" in caplog.text
