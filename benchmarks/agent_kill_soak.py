"""The local agent `kill -9`ed at random moments while short jobs (some retried, some failing) run.

python benchmarks/agent_kill_soak.py --jobs 40 --kills 50 --seed 0

Jobs are submitted over the kill period, so kills land while jobs are claimed, started, running, settled and
retried; after each kill a new agent starts (or a submitter starts one). Each job's command appends a
`start` and an `end` line (job, attempt, time, exit code) to one file. A trigger in the job store records
every change of a job's state into SUCCEEDED or FAILED. The invariants, each failure a violation:

- every job reaches exactly one terminal state (lost: a job missing or not ended; duplicate: a job ended twice
  or left a terminal state);
- it ends as its command decides (the exit codes of its attempts), with no attempt given up as lost;
- no attempt runs twice, and no job runs concurrently with itself (duplicates);
- the store's attempts match the runs' own file: the same attempts, with the exit codes the runs recorded.

`tests/jobs/local/test_agent_kill_soak.py` runs this driver in CI and asserts there are no violations.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.local.daemon import agent_pid, agent_running, start_agent
from lbm.jobs.local.home import LocalHome
from lbm.jobs.local.processes import signal_attempt
from lbm.jobs.model import JobSpec, JobState, Queue
from lbm.jobs.region import Region

QUEUE = "soak"
TERMINAL = (JobState.SUCCEEDED.value, JobState.FAILED.value)
COMMAND = """
import os, sys, time
name, attempt = os.environ["LBM_JOB_NAME"], int(os.environ["LBM_ATTEMPT"])
def record(*fields):
    fd = os.open({runs!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, " ".join(map(str, (name, attempt, *fields))).encode() + b"\\n")
    os.close(fd)
record("start", time.time())
time.sleep({seconds!r})
code = {exit_codes!r}[min(attempt, {last})]
record("end", time.time(), code)
sys.exit(code)
"""
# Every change of a job into a terminal state, and out of one, as the store commits it.
TRIGGERS = f"""
CREATE TABLE soak_endings (job TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL);
CREATE TRIGGER soak_ended AFTER UPDATE OF state ON jobs
WHEN NEW.state != OLD.state AND (NEW.state IN {TERMINAL} OR OLD.state IN {TERMINAL})
BEGIN INSERT INTO soak_endings VALUES (NEW.name, OLD.state, NEW.state); END;
"""


@dataclass(frozen=True)
class PlannedJob:
    """A job of the soak and what its attempts exit with (the last code repeats)."""

    name: str
    exit_codes: tuple[int, ...]
    retries: int
    seconds: float

    @property
    def attempt_codes(self) -> list[int]:
        """The exit codes its attempts end with: until one exits 0 or no retry is left."""
        codes = []
        for attempt in range(self.retries + 1):
            codes.append(self.exit_codes[min(attempt, len(self.exit_codes) - 1)])
            if codes[-1] == 0:
                break
        return codes

    @property
    def final_state(self) -> JobState:
        return JobState.SUCCEEDED if self.attempt_codes[-1] == 0 else JobState.FAILED


@dataclass
class Findings:
    """What the invariants found: jobs lost, runs or endings duplicated, and each violation in words."""

    lost: int = 0
    duplicates: int = 0
    violations: list[str] = field(default_factory=list)

    def add(self, violation: str, *, lost: bool = False, duplicate: bool = False) -> None:
        self.violations.append(violation)
        self.lost += lost
        self.duplicates += duplicate


@dataclass
class SoakReport:
    """The figures of one soak and what its invariants found."""

    seed: int
    jobs: int
    kills: int
    seconds: float
    findings: Findings
    adopted: int = 0  # attempts a restarted agent found running
    requeued: int = 0  # attempts a killed agent had claimed but not started, started again

    @property
    def violations(self) -> list[str]:
        return self.findings.violations

    def summary(self) -> str:
        return (
            f"seed {self.seed}: {self.kills} kills survived, {self.jobs} jobs, {self.findings.lost} lost, "
            f"{self.findings.duplicates} duplicates, {len(self.violations)} violations, {self.seconds:.1f} s "
            f"({self.adopted} running attempts adopted, {self.requeued} claimed but unstarted requeued)"
        )


# (exit codes of its attempts, retries), by job index modulo 8: succeeds (with retries left or none), fails
# then succeeds on a retry, fails with and without retries.
KINDS = (((0,), 0), ((3, 0), 1), ((0,), 2), ((5,), 1), ((0,), 0), ((3, 0), 1), ((4,), 0), ((3, 3, 0), 2))


def plan_jobs(count: int, rng: random.Random) -> list[PlannedJob]:
    """`count` jobs of the KINDS in turn, each running 0.05 to 0.6 s."""
    return [
        PlannedJob(f"soak-{index:03d}", *KINDS[index % len(KINDS)], round(rng.uniform(0.05, 0.6), 3))
        for index in range(count)
    ]


def run_soak(
    root: Path, *, jobs: int = 40, kills: int = 50, seed: int = 0, capacity: int = 4, max_gap_s: float = 1.0
) -> SoakReport:
    """Run the soak under `root` (a fresh folder) and check its invariants."""
    rng = random.Random(seed)
    planned = plan_jobs(jobs, rng)
    runs = root / "runs.txt"
    region = Region(
        name="local",
        backend="local",
        bucket=f"file://{root / 'bucket'}",
        prefix="outputs",
        queues=[Queue(QUEUE, "cpu", capacity)],
    )
    backend = LocalBackend(region, root / "home")
    home = backend.home
    backend.store.save_region(region.name, region.to_dict())
    with sqlite3.connect(home.db) as db:
        db.executescript(TRIGGERS)
    db.close()
    started = time.monotonic()
    kill_period_s = kills * max_gap_s / 2
    submitter = threading.Thread(target=_submit_over, args=(backend, planned, runs, kill_period_s * 0.8))
    survived = 0
    try:
        submitter.start()
        while survived < kills:
            pid = _running_agent(home)
            time.sleep(rng.uniform(0.0, max_gap_s))  # the random moment of the kill
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                _wait(lambda p=pid: _gone(p), "the killed agent to be gone")
                survived += 1
        submitter.join()
        _running_agent(home)
        names = [job.name for job in planned]
        _wait(lambda: _all_ended(backend, names), "every job to end", timeout_s=300.0)
        findings = check(backend, planned, runs)
    finally:
        submitter.join()
        _stop_everything(backend)
    agent_log = home.agent_log.read_text()
    return SoakReport(
        seed,
        len(planned),
        survived,
        time.monotonic() - started,
        findings,
        adopted=agent_log.count(" adopted job "),
        requeued=agent_log.count(" never started; "),
    )


def _submit_over(backend: LocalBackend, planned: list[PlannedJob], runs: Path, period_s: float) -> None:
    """Submit the jobs evenly over `period_s` seconds, through the API a launcher uses."""
    begun = time.monotonic()
    for index, job in enumerate(planned):
        time.sleep(max(0.0, begun + index * period_s / len(planned) - time.monotonic()))  # the submit times
        code = COMMAND.format(
            runs=str(runs), seconds=job.seconds, exit_codes=list(job.exit_codes), last=len(job.exit_codes) - 1
        )
        spec = JobSpec(
            name=job.name,
            owner="soak",
            queue=QUEUE,
            command=(sys.executable, "-c", code),
            artifact_uri=f"{backend.region.bucket}/outputs/soak-lbm/{job.name}/",
            share_identifier="soak",
            retries=job.retries,
        )
        backend.submit(spec, {})


def check(backend: LocalBackend, planned: list[PlannedJob], runs: Path) -> Findings:
    """The invariants, against the store, its trigger's record of endings and the runs' own file."""
    findings = Findings()
    jobs = {job.name: job for job in backend.list()}
    with sqlite3.connect(backend.home.db) as db:
        endings = db.execute("SELECT job, old, new FROM soak_endings").fetchall()
    db.close()
    for job, old, new in endings:
        if old in TERMINAL:
            findings.add(f"{job} left its terminal state {old} for {new}", duplicate=True)
    ended = Counter(job for job, old, _ in endings if old not in TERMINAL)
    starts, own = _read_runs(runs)
    for (name, attempt), count in starts.items():
        if count > 1:
            findings.add(f"{name} attempt {attempt} ran {count} times", duplicate=True)
    for job in planned:
        found = jobs.get(job.name)
        if found is None or not found.state.is_terminal:
            findings.add(f"{job.name} is {'missing' if found is None else found.state.value}", lost=True)
            continue
        if ended[job.name] != 1:
            findings.add(f"{job.name} reached a terminal state {ended[job.name]} times", duplicate=True)
        if found.state != job.final_state:
            findings.add(f"{job.name} ended {found.state.value}; its command decided {job.final_state.value}")
        recorded = [(a.index, a.exit_code) for a in found.attempts]
        if recorded != list(enumerate(job.attempt_codes)):
            findings.add(f"{job.name}: the store has attempts {recorded}, expected {job.attempt_codes}")
        runs_of_job = own.get(job.name, {})
        from_runs = [(attempt, runs_of_job[attempt][2]) for attempt in sorted(runs_of_job)]
        if recorded != from_runs:
            findings.add(f"{job.name}: the store has attempts {recorded}; its runs recorded {from_runs}")
        intervals = sorted((start, end or float("inf")) for start, end, _ in runs_of_job.values())
        if any(later[0] < earlier[1] for earlier, later in zip(intervals, intervals[1:], strict=False)):
            findings.add(f"{job.name} ran concurrently with itself", duplicate=True)
    return findings


def _read_runs(runs: Path) -> tuple[Counter, dict[str, dict[int, tuple[float, float | None, int | None]]]]:
    """From the runs' file: starts per (job, attempt), and per job and attempt (start, end, exit code)."""
    starts: Counter[tuple[str, int]] = Counter()
    own: dict[str, dict[int, tuple[float, float | None, int | None]]] = {}
    for line in runs.read_text().splitlines() if runs.exists() else []:
        name, attempt, what, at, *code = line.split()
        attempts = own.setdefault(name, {})
        if what == "start":
            starts[(name, int(attempt))] += 1
            attempts[int(attempt)] = (float(at), None, None)
        else:
            attempts[int(attempt)] = (attempts[int(attempt)][0], float(at), int(code[0]))
    return starts, own


def _running_agent(home: LocalHome) -> int:
    """The pid of the agent serving `home`, starting one when none runs."""

    def pid() -> int | None:
        found = agent_pid(home)
        if found is None and not agent_running(home):
            start_agent(home)
        return found

    return _wait(pid, "an agent to run")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _all_ended(backend: LocalBackend, names: list[str]) -> bool:
    states = {job.name: job.state for job in backend.list()}
    return all(name in states and states[name].is_terminal for name in names)


def _wait(condition, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.01)
    return value


def _stop_everything(backend: LocalBackend) -> None:
    """Kill the agent and any attempt still running."""
    for attempt in backend.store.active_attempts():
        signal_attempt(attempt.pid, attempt.pid_started_at, signal.SIGKILL)
    pid = agent_pid(backend.home)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: _gone(pid), "the agent to exit")
    backend.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40, help="jobs to run (default 40)")
    parser.add_argument("--kills", type=int, default=50, help="times to kill -9 the agent (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the job durations and kill moments")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbm-soak-") as root:
        report = run_soak(Path(root), jobs=args.jobs, kills=args.kills, seed=args.seed)
    print(report.summary())
    for violation in report.violations:
        print(f"  {violation}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
