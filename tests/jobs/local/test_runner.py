"""The attempt runner as a real process: redacted log, exit file, group clean-up, given-up attempts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from local_setup import process_gone, wait_for

from lbm.jobs.local.home import LocalHome
from lbm.jobs.local.runner import (
    LOST,
    exit_code_of,
    held_back,
    lock_attempt,
    read_exit,
    runner_pid,
    write_exit,
)

SECRET = "s3cr3t-value-0123456789"
RUNNER = (sys.executable, "-m", "lbm.jobs.local.runner")


@pytest.fixture
def home(tmp_path: Path) -> LocalHome:
    home = LocalHome(tmp_path / "home")
    home.logs_dir("job").mkdir(parents=True)
    return home


def run_runner(home: LocalHome, code: str, **env: str) -> subprocess.CompletedProcess:
    """Run the runner for attempt 0 of `job` as a session leader, as the agent does."""
    argv = [*RUNNER, str(home.root), "job", "0", "--redact", "MY_SECRET", "--", sys.executable, "-c", code]
    return subprocess.run(
        argv,
        env={**os.environ, **env},
        start_new_session=True,
        timeout=60,
    )


def test_held_back_keeps_only_a_possible_secret_start():
    secrets = [b"abcdef"]
    assert held_back(b"hello abc", secrets) == 3
    assert held_back(b"hello abx", secrets) == 0
    assert held_back(b"hello", []) == 0
    assert held_back(b"abcde", secrets) == 5


def test_exit_codes_follow_the_shell_convention():
    assert exit_code_of(0) == 0
    assert exit_code_of(3) == 3
    assert exit_code_of(-9) == 137


def test_exit_file_round_trip(tmp_path: Path):
    path = tmp_path / "attempt-0.exit"
    assert read_exit(path) is None
    write_exit(path, "7")
    assert read_exit(path) == 7
    write_exit(path, LOST)
    assert read_exit(path) == LOST


def test_runner_logs_redacted_output_and_records_the_exit_code(home: LocalHome):
    half = len(SECRET) // 2
    code = (
        "import os, sys, time\n"
        "secret = os.environ['MY_SECRET']\n"
        f"print('key=' + secret[:{half}], end='', flush=True)\n"
        "time.sleep(0.3)\n"
        f"print(secret[{half}:] + ' done', flush=True)\n"
        "print('to stderr', secret, file=sys.stderr, flush=True)\n"
        "sys.exit(7)\n"
    )

    run_runner(home, code, MY_SECRET=SECRET)

    log = home.attempt_log("job", 0).read_text()
    assert SECRET not in log
    assert "key=[REDACTED] done" in log
    assert "to stderr [REDACTED]" in log
    assert read_exit(home.attempt_exit("job", 0)) == 7


def test_runner_kills_what_the_command_left_in_its_group(home: LocalHome, tmp_path: Path):
    pid_file = tmp_path / "pid"
    code = (
        "import pathlib, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid))\n"
    )

    run_runner(home, code)

    assert read_exit(home.attempt_exit("job", 0)) == 0
    wait_for(lambda: process_gone(int(pid_file.read_text())), "the left-over process to be killed")


def test_runner_runs_nothing_for_an_attempt_already_given_up(home: LocalHome, tmp_path: Path):
    marker = tmp_path / "ran"
    write_exit(home.attempt_exit("job", 0), LOST)

    run_runner(home, f"import pathlib; pathlib.Path({str(marker)!r}).touch()")

    assert not marker.exists()
    assert read_exit(home.attempt_exit("job", 0)) == LOST


def test_runner_records_a_command_that_cannot_start(home: LocalHome):
    argv = [*RUNNER, str(home.root), "job", "0", "--", "/no/such/program"]
    subprocess.run(argv, start_new_session=True, timeout=60)

    assert read_exit(home.attempt_exit("job", 0)) == 127
    assert "cannot start '/no/such/program'" in home.attempt_log("job", 0).read_text()


def two_fields(path: Path) -> list[str] | None:
    fields = path.read_text().split() if path.exists() else []
    return fields if len(fields) == 2 else None


def test_a_runner_handed_its_lock_holds_it_from_before_it_starts_and_records_its_pid(
    home: LocalHome, tmp_path: Path
):
    go, seen, lock_file = tmp_path / "go", tmp_path / "seen", home.attempt_lock("job", 0)
    code = (
        "import os, pathlib, time\n"
        f"recorded = pathlib.Path({str(lock_file)!r}).read_text()\n"
        f"pathlib.Path({str(seen)!r}).write_text(f'{{os.getppid()}} {{recorded}}')\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.02)\n"
    )
    lock = lock_attempt(home, "job", 0)
    argv = [*RUNNER, str(home.root), "job", "0", "--lock-fd", str(lock), "--", sys.executable, "-c", code]
    runner = subprocess.Popen(argv, pass_fds=(lock,), start_new_session=True)
    os.close(lock)  # as the agent does once the runner exists
    try:
        assert lock_attempt(home, "job", 0, wait=False) is None
        parent, recorded = wait_for(lambda: two_fields(seen), "the command to report its parent and the pid")
        assert int(parent) == int(recorded) == runner.pid == runner_pid(home, "job", 0)
        assert lock_attempt(home, "job", 0, wait=False) is None
    finally:
        go.touch()
        runner.wait(timeout=60)

    assert read_exit(home.attempt_exit("job", 0)) == 0
    free = lock_attempt(home, "job", 0, wait=False)
    assert free is not None
    os.close(free)
