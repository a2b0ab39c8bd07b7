"""The files of one local backend home ($LBM_HOME): job store, agent lock, log and wake-up FIFO, runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lbm.errors import LbmError


def lbm_home() -> Path:
    """Where the local backend keeps its jobs, runs and bucket: $LBM_HOME, else the user data dir."""
    home = os.environ.get("LBM_HOME")
    if home:
        return Path(home).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir("lbm"))


@dataclass(frozen=True)
class LocalHome:
    """Paths under one $LBM_HOME; each job's working directory is `runs/<job>/` (its LBM_OUTPUT_DIR)."""

    root: Path

    def check(self) -> None:
        """LbmError when the home is (under) a file, on a read-only mount or not writable; creates nothing."""
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        fix = "set $LBM_HOME to a folder you can write to"
        if not existing.is_dir():
            where = "is a file" if existing == self.root else f"is under a file ({existing})"
            raise LbmError(f"the lbm home {self.root} {where}, not a folder; {fix}")
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            raise LbmError(f"the lbm home {self.root} is on a read-only mount; {fix}")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise LbmError(f"the lbm home {self.root} is not writable by you; {fix}")

    @property
    def db(self) -> Path:
        return self.root / "jobs.sqlite"

    @property
    def agent_lock(self) -> Path:
        return self.root / "agent.lock"

    @property
    def agent_log(self) -> Path:
        return self.root / "agent.log"

    @property
    def wake_fifo(self) -> Path:
        return self.root / "agent.wake"

    def output_dir(self, job: str) -> Path:
        return self.root / "runs" / job

    def logs_dir(self, job: str) -> Path:
        return self.output_dir(job) / "logs"

    def attempt_log(self, job: str, attempt: int) -> Path:
        return self.logs_dir(job) / f"attempt-{attempt}.log"

    def attempt_exit(self, job: str, attempt: int) -> Path:
        """Written once by the attempt runner (the exit code) or by the agent (`lost`), never both."""
        return self.logs_dir(job) / f"attempt-{attempt}.exit"

    def attempt_lock(self, job: str, attempt: int) -> Path:
        """Held (flock) by the attempt runner for as long as it lives."""
        return self.logs_dir(job) / f"attempt-{attempt}.lock"
