"""The agent tells a Slack webhook (a local HTTP server here) about RUNNING, FAILED and SUCCEEDED jobs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from local_setup import LocalSetup, agent_dies_at, wait_for

from lbm.jobs import crash_points
from lbm.jobs.local import daemon
from lbm.jobs.model import JobState, Queue
from lbm.jobs.region import SlackSettings


@pytest.fixture
def slack(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[str], dict]]:
    """(posted texts, settings): a webhook answers `settings["status"]`; its URL in $LBM_SLACK_WEBHOOK_URL."""
    texts: list[str] = []
    settings = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            texts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"])
            self.send_response(settings["status"])
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/services/T0/B0/hook-secret"
    monkeypatch.setenv("LBM_SLACK_WEBHOOK_URL", url)
    yield texts, settings
    server.shutdown()
    server.server_close()


@pytest.fixture
def notified(isolated_env: Path, slack) -> Iterator[LocalSetup]:
    setup = LocalSetup(isolated_env, [Queue("solo", "cpu", 1)])
    setup.slack = SlackSettings(
        webhook_url_env="LBM_SLACK_WEBHOOK_URL", states=("RUNNING", "FAILED", "SUCCEEDED")
    )
    yield setup
    setup.clean_up()


def test_running_failed_and_succeeded_are_posted(notified: LocalSetup, slack):
    texts, _ = slack
    notified.submit("ann-ok", "pass")
    notified.submit("bob-bad", "import sys; sys.exit(4)", owner="bob")
    notified.wait_ended("ann-ok")
    notified.wait_ended("bob-bad")

    wait_for(lambda: len(texts) == 4, "four notifications")

    assert sorted(t.splitlines()[0] for t in texts) == [
        "Job ann-ok is RUNNING (owner ann, queue solo)",
        "Job ann-ok is SUCCEEDED (owner ann, queue solo)",
        "Job bob-bad is FAILED (owner bob, queue solo): exit code 4",
        "Job bob-bad is RUNNING (owner bob, queue solo)",
    ]
    assert "hook-secret" not in notified.home.agent_log.read_text()


def test_a_failing_webhook_never_affects_the_job(notified: LocalSetup, slack):
    texts, settings = slack
    settings["status"] = 500

    notified.submit("ann-ok", "print('fine')")

    assert notified.wait_ended("ann-ok").state == JobState.SUCCEEDED
    wait_for(lambda: len(texts) == 2, "both notifications to be tried")
    log = wait_for(
        lambda: (text := notified.home.agent_log.read_text()).count("failed: HTTP 500") == 2 and text,
        "the failures to be logged",
    )
    assert "slack notification for job ann-ok failed: HTTP 500" in log
    assert "hook-secret" not in log


def test_a_running_state_the_killed_agent_did_not_post_is_posted_once_by_the_next(
    notified: LocalSetup, slack, monkeypatch: pytest.MonkeyPatch
):
    texts, _ = slack
    notified.insert("ann-ok", "pass")  # queued without starting an agent
    agent_dies_at(notified, monkeypatch, "running-written")  # RUNNING is committed, not yet posted

    daemon.ensure_agent(notified.home)

    assert notified.wait_ended("ann-ok").state == JobState.SUCCEEDED
    wait_for(lambda: len(texts) == 2, "both notifications")
    daemon.stop_agent(notified.home)
    assert sorted(t.splitlines()[0] for t in texts) == [
        "Job ann-ok is RUNNING (owner ann, queue solo)",
        "Job ann-ok is SUCCEEDED (owner ann, queue solo)",
    ]


def test_an_end_the_killed_agent_did_not_post_is_posted_once_by_the_next(
    notified: LocalSetup, slack, monkeypatch: pytest.MonkeyPatch, tmp_path
):
    texts, _ = slack
    release = tmp_path / "release"
    notified.insert(
        "ann-ok", f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)"
    )
    monkeypatch.setenv(crash_points.ENV, "settled")  # the agent dies once SUCCEEDED is committed
    daemon.ensure_agent(notified.home)
    monkeypatch.delenv(crash_points.ENV)
    wait_for(lambda: len(texts) == 1, "the RUNNING notification")
    release.touch()
    wait_for(lambda: not daemon.agent_running(notified.home), "the agent killed at settled to be gone")

    daemon.ensure_agent(notified.home)

    wait_for(lambda: len(texts) == 2, "the SUCCEEDED notification")
    daemon.stop_agent(notified.home)
    assert [t.splitlines()[0] for t in texts] == [
        "Job ann-ok is RUNNING (owner ann, queue solo)",
        "Job ann-ok is SUCCEEDED (owner ann, queue solo)",
    ]
