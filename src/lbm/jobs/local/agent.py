"""The scheduler agent of one $LBM_HOME: starts queued jobs on free capacity by fair share, watches attempts.

One agent runs per home (flock on agent.lock); submitters start it when none runs. It sleeps on the wake-up
FIFO (and SIGCHLD), with a slow poll as a fallback, so it uses no CPU while idle. Each attempt is a runner
process in its own session (see `lbm.jobs.local.runner`) that outlives the agent; a restarted agent adopts
the attempts still running (their runner holds the attempt lock) and settles the finished ones from their
exit files, so no job is lost and none runs twice. An attempt it finds claimed but never started (the lock
free, no runner pid in it) goes back to its queue without using a retry. Tests kill the agent at named steps
of an attempt's life through `lbm.jobs.crash_points`.

Secrets are per job: a submitter hands a job's secrets (its W&B key) to the agent over the FIFO, before the
job is in the store; the agent keeps them in memory only, puts them in that job's attempts' environment and
redacts them from the attempt log and the output archive. A job never gets the agent's own W&B key: the
agent's WANDB_API_KEY is left out of every attempt's environment and NETRC points at /dev/null, so neither
the job nor W&B reads a ~/.netrc. A job whose secrets were lost (the agent restarted before it started)
runs without them, with a note in its log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lbm.errors import LbmError
from lbm.jobs.crash_points import CrashPoints
from lbm.jobs.environment import job_environment
from lbm.jobs.local import daemon, runner
from lbm.jobs.local.fair_share import decay_window, decayed_usage, jobs_to_start
from lbm.jobs.local.home import LocalHome
from lbm.jobs.local.processes import process_start_time, signal_attempt
from lbm.jobs.local.store import JobStore, StoreDamaged
from lbm.jobs.local.wakeup import WakeupReader
from lbm.jobs.model import JobSpec, JobState, StatusReason
from lbm.jobs.region import Region
from lbm.notify.slack import JobEvent, SlackNotifier
from lbm.secrets import SUBMITTER_SECRET_NAMES, secret_env_names, wandb_api_key

log = logging.getLogger("lbm.agent")

POLL_S = 5.0
STOP_GRACE_S = 10.0
# The outcome of an attempt whose runner never started its command (the agent died as it spawned it).
NEVER_STARTED = "never started"
LOST_SECRETS_NOTE = (
    b"lbm: the secrets given with this job (its W&B key) were lost when the agent restarted before it "
    b"started; it runs without them\n"
)


@dataclass
class Tracked:
    """An attempt the agent watches; `process` is None when adopted from an earlier agent."""

    job: str
    index: int
    spec: JobSpec
    started_at: float
    pid: int | None
    pid_started_at: float | None
    process: subprocess.Popen | None = None
    term_sent_at: float | None = None
    killed: bool = False


def lbm_argv(command: tuple[str, ...]) -> list[str]:
    """The command with a leading `lbm` replaced by the `lbm` script of this installation."""
    argv = list(command)
    script = Path(sys.executable).with_name("lbm")
    if argv and argv[0] == "lbm" and script.exists():
        argv[0] = str(script)
    return argv


class Agent:
    """Schedules and watches the jobs of one home until SIGTERM or SIGINT."""

    def __init__(self, home: LocalHome, *, poll_s: float = POLL_S, grace_s: float | None = None):
        self.home = home
        self.poll_s = poll_s
        self.grace_s = float(os.environ.get("LBM_STOP_GRACE_S", STOP_GRACE_S)) if grace_s is None else grace_s
        self.host = socket.gethostname()
        self.tracked: dict[str, Tracked] = {}
        self.reaping: list[subprocess.Popen] = []
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.regions: dict[str, Region] = {}
        self._regions_data: dict = {}
        self._notifiers: dict[str, SlackNotifier | None] = {}
        self._archiving: dict[str, Future] = {}
        self._stopping = False

    # --- main loop -----------------------------------------------------------------------------------------

    def run(self, lock: int | None = None) -> int:
        """Serve until asked to exit; `lock` is the agent lock if the caller already holds it."""
        self.crash_points = CrashPoints.from_environment()
        lock = daemon.acquire_agent_lock(self.home) if lock is None else lock
        if lock is None:
            log.info("another agent already serves %s", self.home.root)
            return 0
        self.store = JobStore(self.home.db, self.crash_points)
        self.store.check_integrity()
        self.wakeups = WakeupReader(self.home.wake_fifo)
        self._notify_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify")
        self._archive_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive")
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._request_exit)
        signal.signal(signal.SIGINT, self._request_exit)
        log.info("agent %d serving %s", os.getpid(), self.home.root)
        self._adopt()
        while not self._stopping:
            try:
                self.step()
            except StoreDamaged:
                raise  # serving it could only spread the damage: the agent exits with the message
            except LbmError as error:  # e.g. the store's disk is full
                log.error("scheduling pass failed: %s; retrying in %.0f s", error, self.poll_s)
            except Exception:  # noqa: BLE001 - a failed pass (e.g. a store locked too long) is retried next time
                log.exception("scheduling pass failed; retrying in %.0f s", self.poll_s)
            ready, _, _ = select.select([self.wakeups, wake_read], [], [], self._sleep_s())
            if wake_read in ready:
                os.read(wake_read, 4096)
        log.info("agent %d stopping; %d attempt(s) keep running", os.getpid(), len(self.tracked))
        self._notify_pool.shutdown(wait=True)
        self._archive_pool.shutdown(wait=True)
        self.store.close()
        os.close(lock)
        return 0

    def _request_exit(self, *_: object) -> None:
        self._stopping = True

    def step(self) -> None:
        """One pass: take hand-overs, settle ended attempts, stop and time out, start, notify, archive."""
        self._take_handovers()
        self._settle()
        self._stop_and_time_out()
        self._schedule()
        self._notify()
        self._archive()

    def _sleep_s(self) -> float:
        now = time.time()
        wake_at = [now + self.poll_s]
        for t in self.tracked.values():
            if t.term_sent_at is not None and not t.killed:
                wake_at.append(t.term_sent_at + self.grace_s)
            elif t.spec.max_runtime_s and t.term_sent_at is None:
                wake_at.append(t.started_at + t.spec.max_runtime_s)
        if self.reaping or self._archiving:
            wake_at.append(now + 0.2)
        return max(0.0, min(wake_at) - now)

    def _take_handovers(self) -> None:
        for message in self.wakeups.read():
            if isinstance(message, dict) and isinstance(message.get("secrets"), dict):
                self.secrets[(str(message.get("job")), str(message.get("handoff")))] = message["secrets"]

    # --- attempts ------------------------------------------------------------------------------------------

    def _adopt(self) -> None:
        for active in self.store.active_attempts():
            self.tracked[active.job] = Tracked(
                job=active.job,
                index=active.index,
                spec=active.spec,
                started_at=active.started_at or time.time(),
                pid=active.pid,
                pid_started_at=active.pid_started_at,
            )
            log.info("adopted job %s attempt %d (pid %s)", active.job, active.index, active.pid)

    def _exit_of(self, t: Tracked) -> int | str | None:
        """The attempt's exit code, `runner.LOST`, NEVER_STARTED, or None while it runs."""
        exit_path = self.home.attempt_exit(t.job, t.index)
        if t.process is not None:
            returncode = t.process.poll()
            recorded = runner.read_exit(exit_path)
            if recorded is not None:
                if returncode is None:
                    self.reaping.append(t.process)
                return recorded
            return None if returncode is None else runner.exit_code_of(returncode)
        recorded = runner.read_exit(exit_path)
        if recorded is not None:
            return recorded
        self.home.logs_dir(t.job).mkdir(parents=True, exist_ok=True)
        lock = runner.lock_attempt(self.home, t.job, t.index, wait=False)
        if lock is None:
            if t.pid is None:
                self._note_runner_pid(t)
            return None
        try:
            recorded = runner.read_exit(exit_path)
            if recorded is not None:
                return recorded
            if runner.runner_pid(self.home, t.job, t.index) is None:
                return NEVER_STARTED
            runner.write_exit(exit_path, runner.LOST)
            return runner.LOST
        finally:
            os.close(lock)

    def _note_runner_pid(self, t: Tracked) -> None:
        """An adopted attempt that was STARTING: take the pid its runner wrote in the lock file."""
        pid = runner.runner_pid(self.home, t.job, t.index)
        if pid is None:
            return
        started = process_start_time(pid)
        if started is not None:
            t.pid, t.pid_started_at = pid, started
            self.store.attempt_running(t.job, t.index, pid, started)

    def _settle(self) -> None:
        self.reaping = [p for p in self.reaping if p.poll() is None]
        for t in list(self.tracked.values()):
            outcome = self._exit_of(t)
            if outcome is not None:
                self.crash_points.reach("exit-file-written")
                self._finish(t, outcome)

    def _finish(self, t: Tracked, outcome: int | str) -> None:
        del self.tracked[t.job]
        if outcome == NEVER_STARTED and self.store.unclaim(t.job, t.index):
            log.info("job %s attempt %d never started; the job waits to start again", t.job, t.index)
            return
        current = self.store.active_attempts(t.job)
        stop_reason = current[0].stop_reason if current else None
        timed_out = bool(current) and current[0].status_reason == StatusReason.TIMED_OUT
        exit_code = outcome if isinstance(outcome, int) else None
        attempt_reason = StatusReason.AGENT_LOST if exit_code is None else StatusReason.exit_code(exit_code)
        if stop_reason:
            state, reason = JobState.FAILED, stop_reason
        elif timed_out:
            state, reason, attempt_reason = JobState.FAILED, StatusReason.TIMED_OUT, StatusReason.TIMED_OUT
        elif exit_code == 0:
            state, reason = JobState.SUCCEEDED, None
        elif t.index < t.spec.retries:
            state, reason = JobState.RUNNABLE, attempt_reason
        else:
            state, reason = JobState.FAILED, attempt_reason
        self.store.end_attempt(
            t.job, t.index, exit_code=exit_code, attempt_reason=attempt_reason, state=state, reason=reason
        )
        log.info("job %s attempt %d ended (%s): %s", t.job, t.index, attempt_reason, state.value)

    def _stop_and_time_out(self) -> None:
        now = time.time()
        stops = {a.job: a.stop_reason for a in self.store.active_attempts() if a.stop_reason}
        for t in self.tracked.values():
            if t.term_sent_at is None and t.job in stops:
                log.info("job %s: stopping (%s)", t.job, stops[t.job])
                self._signal(t, signal.SIGTERM)
            elif (
                t.term_sent_at is None and t.spec.max_runtime_s and now >= t.started_at + t.spec.max_runtime_s
            ):
                log.info("job %s: timed out after %.0f s", t.job, t.spec.max_runtime_s)
                self.store.mark_attempt(t.job, t.index, StatusReason.TIMED_OUT)
                self._signal(t, signal.SIGTERM)
            elif t.term_sent_at is not None and not t.killed and now >= t.term_sent_at + self.grace_s:
                log.info("job %s: still running %.0f s after SIGTERM; killing it", t.job, self.grace_s)
                self._signal(t, signal.SIGKILL)
                t.killed = True

    def _signal(self, t: Tracked, sig: int) -> None:
        if sig == signal.SIGTERM:
            t.term_sent_at = time.time()
        if t.process is not None:
            if t.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(t.process.pid, sig)
        else:
            signal_attempt(t.pid, t.pid_started_at, sig)

    # --- scheduling ----------------------------------------------------------------------------------------

    def _load_regions(self) -> None:
        data = self.store.regions()
        if data != self._regions_data:
            self._regions_data = data
            self.regions = {name: Region.from_dict(d) for name, d in data.items()}
            self._notifiers = {}

    def _schedule(self) -> None:
        self.store.promote_submitted()
        self._load_regions()
        now = time.time()
        busy = self.store.busy_devices()
        for region in self.regions.values():
            for queue in region.queues:
                held = self.store.held_by_share(queue.name)
                if sum(held.values()) >= queue.capacity:
                    continue
                queued = self.store.runnable(queue.name)
                if not queued:
                    continue
                window = decay_window(queue.share_decay_seconds)
                since = now - window
                intervals: dict[str, list[tuple[float, float | None, int]]] = {}
                for share, start, stop, instances in self.store.usage_intervals(queue.name, since):
                    intervals.setdefault(share, []).append((start, stop, instances))
                usage = {s: decayed_usage(i, now, window) for s, i in intervals.items()}
                chosen = jobs_to_start(
                    queued,
                    capacity=queue.capacity,
                    in_use=sum(held.values()),
                    usage=usage,
                    weights=queue.weight_factors,
                    compute_reservation=queue.compute_reservation,
                    active_shares=self.store.active_shares(queue.name, since),
                )
                gpu_pool = region.devices.get(queue.instance_type)
                for job in chosen:
                    devices: list[int] = []
                    if gpu_pool is not None:
                        free = [d for d in gpu_pool if d not in busy]
                        if len(free) < job.slots:
                            break
                        devices = free[: job.slots]
                        busy.update(devices)
                    self._start(job.name, region, devices)

    def _start(self, name: str, region: Region, devices: list[int]) -> None:
        try:
            spec, index, handoff = self.store.begin_attempt(
                name, lambda n: self.home.attempt_log(name, n), devices, self.host
            )
        except LookupError:
            return
        self._take_handovers()
        secrets = self.secrets.get((name, handoff), {}) if handoff else {}
        output_dir = self.home.output_dir(name)
        self.home.logs_dir(name).mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in SUBMITTER_SECRET_NAMES}
        env.update(job_environment(spec, attempt=index, output_dir=output_dir))
        env.update(secrets)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
        elif region.devices:
            env["CUDA_VISIBLE_DEVICES"] = ""
        redact_names = sorted({*secrets, *secret_env_names(env)})
        lock = runner.lock_attempt(self.home, name, index)
        argv = [sys.executable, "-m", "lbm.jobs.local.runner", str(self.home.root), name, str(index)]
        argv += ["--lock-fd", str(lock), "--redact", ",".join(redact_names), "--", *lbm_argv(spec.command)]
        log_path = self.home.attempt_log(name, index)
        try:
            with open(log_path, "ab") as attempt_log:
                if handoff and not secrets:
                    log.warning("job %s runs without its secrets: lost when the agent restarted", name)
                    attempt_log.write(LOST_SECRETS_NOTE)
                    attempt_log.flush()
                process = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=output_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=attempt_log,
                    stderr=attempt_log,
                    start_new_session=True,
                    pass_fds=(lock,),
                )
        except OSError as error:
            log.error("job %s: cannot start the attempt runner: %s", name, error.strerror)
            self.store.end_attempt(
                name,
                index,
                exit_code=None,
                attempt_reason=f"cannot start: {error.strerror}",
                state=JobState.FAILED,
                reason=f"cannot start: {error.strerror}",
            )
            return
        finally:
            os.close(lock)
        self.crash_points.reach("runner-spawned")
        started = process_start_time(process.pid) or time.time()
        self.tracked[name] = Tracked(
            job=name,
            index=index,
            spec=spec,
            started_at=time.time(),
            pid=process.pid,
            pid_started_at=started,
            process=process,
        )
        self.store.attempt_running(name, index, process.pid, started)
        where = f" on GPUs {','.join(map(str, devices))}" if devices else ""
        log.info("job %s attempt %d RUNNING (pid %d)%s", name, index, process.pid, where)

    # --- notifications and archives ------------------------------------------------------------------------

    def _notifier(self, queue: str) -> SlackNotifier | None:
        """The notifier of the region the queue belongs to (None when it has no Slack settings)."""
        region = next((r for r in self.regions.values() if any(q.name == queue for q in r.queues)), None)
        if region is None:
            return None
        if region.name not in self._notifiers:
            self._notifiers[region.name] = SlackNotifier.from_settings(region.slack)
        return self._notifiers[region.name]

    def _notify(self) -> None:
        """Post the states the store's outbox holds, each at most once: an entry is marked told as its post
        starts, so a state the agent had not begun to post when it was killed is posted by the next agent."""
        for seq, name, state in self.store.outbox():
            self.store.told(seq)
            job = self.store.job(name)
            notifier = self._notifier(job.queue)
            if notifier is not None and notifier.wants(state.value):
                reason = job.status_reason if state is JobState.FAILED else None
                event = JobEvent(job.name, job.owner, job.queue, state.value, reason, job.artifact_uri)
                self._notify_pool.submit(notifier.send, event)

    def _archive(self) -> None:
        for name, future in list(self._archiving.items()):
            if future.done():
                del self._archiving[name]
                error = future.exception()
                if error is None:
                    self.store.mark_archived(name)
                    log.info("job %s: output archive written", name)
                else:
                    log.warning("job %s: output archive failed (not retried): %s", name, error)
                    self.store.mark_archived(name)
        for job in self.store.unarchived():
            if job.name in self._archiving:
                continue
            if not job.attempts:  # cancelled in its queue: it never ran, there is nothing to pack
                self.store.mark_archived(job.name)
                continue
            handoffs = [s for (n, _), s in self.secrets.items() if n == job.name]
            secrets = [v for s in handoffs for v in s.values()]
            secrets += [v for name in secret_env_names(os.environ) if (v := os.environ[name])]
            key = wandb_api_key()
            if key:
                secrets.append(key)
            for pair in [p for p in self.secrets if p[0] == job.name]:
                del self.secrets[pair]
            logs = [Path(a.log_uri) for a in job.attempts if a.log_uri]
            self._archiving[job.name] = self._archive_pool.submit(
                _upload_archive, self.home.output_dir(job.name), logs, job.artifact_uri, secrets
            )


def _upload_archive(output_dir: Path, logs: list[Path], artifact_uri: str, secrets: list[str]) -> str:
    from lbm.storage.archive import upload_archive

    return upload_archive(output_dir, logs, artifact_uri, secrets)


def run_agent(home: LocalHome, lock: int | None = None) -> int:
    """Serve `home` in this process until SIGTERM/SIGINT, logging to stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    return Agent(home).run(lock)
