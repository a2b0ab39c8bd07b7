"""The files of one local backend home ($LBM_HOME): job store, agent lock, log and wake-up FIFO, runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalHome:
    """Paths under one $LBM_HOME; each job's working directory is `runs/<job>/` (its LBM_OUTPUT_DIR)."""

    root: Path

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
