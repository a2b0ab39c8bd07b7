"""Runs one attempt of a job and records how it ended, whether or not the agent is still alive.

`python -m lbm.jobs.local.runner HOME JOB ATTEMPT [--lock-fd FD] [--redact NAME,...] -- COMMAND...`, started
by the agent as the leader of a new session (so the attempt is one process group). It holds
`attempt-<n>.lock` for its whole life (the agent takes it before starting the runner and hands it down as
FD, so it is held from before the runner exists), writes its pid there before it starts the command, copies
the command's output into `attempt-<n>.log` with the values of the named environment variables redacted,
then writes the exit code to `attempt-<n>.exit` (temp file + rename), wakes the agent, and kills what is left
of its process group. SIGTERM reaches the command through the group; the runner itself outlives it to record
the exit code. If it finds the exit file already written (the agent gave the attempt up before it started),
it runs nothing. A free lock with no pid in it thus means the command never started.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from lbm.jobs.local import wakeup
from lbm.jobs.local.home import LocalHome
from lbm.secrets import redact

LOST = "lost"
CANNOT_START = 127


def exit_code_of(returncode: int) -> int:
    """A process's exit status as a shell reports it (killed by signal N → 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def write_exit(path: Path, content: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(content)
    os.replace(partial, path)


def read_exit(path: Path) -> int | str | None:
    """The recorded exit code, `LOST`, or None when nothing is recorded yet."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return LOST if text == LOST else int(text)


def held_back(data: bytes, secrets: Sequence[bytes]) -> int:
    """Length of the longest tail of `data` that could be the start of a secret (kept until more arrives)."""
    longest = max((len(s) for s in secrets), default=0)
    for size in range(min(len(data), longest - 1), 0, -1):
        tail = data[-size:]
        if any(s.startswith(tail) for s in secrets):
            return size
    return 0


def copy_output(fd: int, log: int, secrets: Sequence[bytes], process: subprocess.Popen) -> None:
    """Copy the command's output to the log until it ends (or it exits and nothing more comes)."""
    pending = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if process.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending = redact(pending + chunk, secrets) if secrets else pending + chunk
        keep = held_back(pending, secrets)
        os.write(log, pending[: len(pending) - keep])
        pending = pending[len(pending) - keep :]
    os.write(log, pending)


def lock_attempt(home: LocalHome, job: str, attempt: int, *, wait: bool = True) -> int | None:
    """The attempt's lock file, open and locked; None when `wait` is False and another process holds it."""
    lock = os.open(home.attempt_lock(job, attempt), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(lock)
        return None
    return lock


def runner_pid(home: LocalHome, job: str, attempt: int) -> int | None:
    """The pid the attempt's runner wrote in its lock file (None: no runner got as far as its command)."""
    try:
        return int(home.attempt_lock(job, attempt).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_attempt(
    home: LocalHome,
    job: str,
    attempt: int,
    command: Sequence[str],
    redact_names: Sequence[str],
    lock: int | None = None,
) -> int:
    if lock is None:
        lock = lock_attempt(home, job, attempt)
    exit_path = home.attempt_exit(job, attempt)
    if exit_path.exists():
        return 0
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    secrets = [os.environ[name].encode() for name in redact_names if os.environ.get(name)]
    log = os.open(home.attempt_log(job, attempt), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as error:
        os.write(log, f"lbm: cannot start {command[0]!r}: {error.strerror}\n".encode())
        code = CANNOT_START
    else:
        copy_output(process.stdout.fileno(), log, secrets, process)
        code = exit_code_of(process.wait())
    os.close(log)
    write_exit(exit_path, str(code))
    wakeup.send(home.wake_fifo)
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    return 0


def main(argv: Sequence[str]) -> int:
    if "--" not in argv or len(argv) < 5:
        print(
            "usage: python -m lbm.jobs.local.runner HOME JOB ATTEMPT [--lock-fd FD] [--redact NAMES]"
            " -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    split = list(argv).index("--")
    head, command = list(argv[:split]), list(argv[split + 1 :])
    names = head[head.index("--redact") + 1].split(",") if "--redact" in head else []
    lock = int(head[head.index("--lock-fd") + 1]) if "--lock-fd" in head else None
    return run_attempt(LocalHome(Path(head[0])), head[1], int(head[2]), command, names, lock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
