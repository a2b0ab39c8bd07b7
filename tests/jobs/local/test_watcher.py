"""`lbm.jobs.watcher` and `lbm watch` over the embedded backend: each job state reaches Slack once, also after
a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_setup import LocalSetup

from lbm.jobs.model import JobState, Queue
from lbm.jobs.watcher import JobWatcher
from lbm.notify.slack import SlackNotifier
from webhook import Webhook, serving_webhook

STATES = ("RUNNING", "FAILED", "SUCCEEDED")


@pytest.fixture
def hook() -> Iterator[Webhook]:
    with serving_webhook() as webhook:
        yield webhook


@pytest.fixture
def setup(isolated_env: Path) -> Iterator[LocalSetup]:
    local = LocalSetup(isolated_env, [Queue("wide", "cpu", 4), Queue("held", "cpu", 0)])
    yield local
    local.clean_up()


def texts(hook: Webhook) -> list[str]:
    return [payload["text"].splitlines()[0] for payload in hook.payloads]


def test_each_new_state_is_posted_once_and_a_restarted_watcher_does_not_repost(setup, hook, tmp_path):
    state = tmp_path / "watch.sqlite"
    notifier = SlackNotifier(hook.url, STATES)
    setup.submit("ann-before", "pass")
    setup.wait_ended("ann-before")
    first = JobWatcher(setup.backend, notifier, state)
    assert first.poll() == []  # a new watcher starts from what it finds: the past is not posted

    setup.submit("ann-ok", "pass")
    setup.submit("bob-bad", "import sys; sys.exit(5)", owner="bob")
    setup.submit("cat-waits", "pass", queue="held", owner="cat")
    setup.wait_ended("ann-ok")
    setup.wait_ended("bob-bad")
    first.poll()
    first.close()
    assert sorted(texts(hook)) == [
        "Job ann-ok is SUCCEEDED (owner ann, queue wide)",
        "Job bob-bad is FAILED (owner bob, queue wide): exit code 5",
    ]

    again = JobWatcher(setup.backend, notifier, state)
    assert again.poll() == []
    setup.backend.stop("cat-waits", reason="cancelled in queue")
    setup.wait_ended("cat-waits")
    again.poll()
    assert texts(hook)[-1] == "Job cat-waits is FAILED (owner cat, queue held): cancelled in queue"
    assert len(hook.payloads) == 3


def test_a_running_job_is_posted_while_it_runs(setup, hook, tmp_path):
    watcher = JobWatcher(setup.backend, SlackNotifier(hook.url, ("RUNNING",)), tmp_path / "watch.sqlite")
    watcher.poll()
    release = tmp_path / "release"
    setup.submit("ann-long", f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)")
    setup.wait_state("ann-long", [JobState.RUNNING])
    watcher.poll()
    assert texts(hook) == ["Job ann-long is RUNNING (owner ann, queue wide)"]
    release.touch()
    setup.wait_ended("ann-long")
    watcher.poll()
    assert len(hook.payloads) == 1  # SUCCEEDED is not among the states asked for


def test_lbm_watch_without_a_webhook_is_one_line_exit_2(isolated_env: Path):
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lbm")), "watch", "--once"],
        capture_output=True,
        text=True,
        env={**os.environ, "LBM_SITE": ""},
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lbm watch: error: region local has no Slack webhook to post to: set notifications.slack in the site "
        "file and the webhook URL in the variable or file it names"
    ]
