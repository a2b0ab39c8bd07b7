"""The controller: up to `max_agents` runs at once, each asked of the study, launched as a job through the
backend, watched to its end and reported with the metric from its metrics; hyperband stops runs that fall
behind. A sweep outlives its controller: a new one picks up the jobs and the runs left half-launched. A run
records its job's name before the job is queued, so a controller killed in between leaves a name that a new
one finds queued (and watches) or unknown (and launches the run again): never two jobs for one run."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from lbm.errors import LbmError
from lbm.jobs.crash_points import SWEEP_ENV, SWEEP_POINTS, CrashPoints
from lbm.jobs.model import JobSpec, JobState
from lbm.sweeps.engine import ARTIFACT_URI, CONTROLLER, JOB, Run
from lbm.sweeps.hyperband import runs_to_stop
from lbm.sweeps.job_metrics import metric_history
from lbm.sweeps.record import State, set_state, state_of

if TYPE_CHECKING:
    from lbm.jobs.backend import Backend
    from lbm.sweeps.engine import SweepStudy
    from lbm.sweeps.runs import RunPlanner

POLL_S = 0.5
# A run with no controller named yet is being made by one (between its trial and its controller's name);
# only after this long is it taken to be left by a controller that died in between.
UNCLAIMED_GRACE_S = 60.0


def controller_alive(controller: str | None) -> bool:
    """Whether the controller `host:pid` still runs (one on another host is taken to run; a zombie, killed
    and not yet reaped, does not)."""
    if not controller:
        return False
    host, _, pid = controller.rpartition(":")
    if host != socket.gethostname():
        return True
    import psutil

    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, ValueError):
        return True


class Controller:
    """Runs the sweep in `study` until it has made all its runs, is stopped, or a run meets the target."""

    def __init__(
        self,
        study: SweepStudy,
        planner: RunPlanner,
        backend: Backend,
        max_agents: int,
        secrets: Mapping[str, str],
        say: Callable[[str], None] = lambda line: print(line, flush=True),
    ):
        self.study, self.planner, self.backend = study, planner, backend
        self.max_agents, self.secrets, self.say = max_agents, secrets, say
        self.active: dict[int, str] = {}  # run number -> job name
        self._ended_histories: dict[int, list[float]] = {}  # the metric's values of runs that ended
        self.crash_points = CrashPoints.from_environment(SWEEP_ENV, SWEEP_POINTS)

    def run(self) -> int:
        """0 when the sweep has ended (all runs made, target met or stopped)."""
        self._pick_up()
        while True:
            if state_of(self.study) == State.STOPPED:
                self._stop_active()
                self.say(f"sweep {self.study.study.study_name} was stopped")
                return 0
            self._watch()
            while len(self.active) < self.max_agents:
                run = self.study.next_run()
                if run is None:
                    break
                self._launch(run)
            if not self.active and self._left_to_others():
                self._pick_up()  # a controller that watched the last runs may have died meanwhile
            if not self.active and not self._left_to_others():
                if state_of(self.study) != State.STOPPED:
                    set_state(self.study, State.FINISHED)
                self.say(f"sweep {self.study.study.study_name} finished")
                return 0
            time.sleep(POLL_S)

    def _stop_active(self) -> None:
        """Stop the jobs this controller watches (one launched as the sweep was being stopped)."""
        for number, name in self.active.items():
            with contextlib.suppress(LbmError):  # it has ended already
                self.backend.stop(name, reason="the sweep was stopped")
            self.study.finish(number, None, reason="the sweep was stopped")
        self.active.clear()

    def _left_to_others(self) -> bool:
        """Whether runs are still going elsewhere (another controller) while this one can launch no more."""
        if not self.study.exhausted():
            return False
        return any(t.state is TrialState.RUNNING for t in self.study.trials())

    def _pick_up(self) -> None:
        """Watch the jobs of runs whose controller is gone; relaunch those that never got a job."""
        for trial in self.study.trials():
            if trial.state is not TrialState.RUNNING or not self._left_behind(trial):
                continue
            if not self.study.take_over(trial.number, trial.user_attrs.get(CONTROLLER)):
                continue  # another controller took it over at the same moment
            job = trial.user_attrs.get(JOB)
            if job is not None and self._queued(job):
                self.active[trial.number] = job
                self.say(f"run {trial.number}: watching job {job} again")
            else:
                self._launch(self.study.parameters(trial.number))

    def _left_behind(self, trial: FrozenTrial) -> bool:
        """Whether the run's controller is gone (a run just made by another has none named yet)."""
        controller = trial.user_attrs.get(CONTROLLER)
        if controller is None:
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            return time.time() - started > UNCLAIMED_GRACE_S
        return not controller_alive(controller)

    def _queued(self, name: str) -> bool:
        """Whether the backend has the job `name` (a name recorded by a controller that died before it
        queued the job is unknown)."""
        try:
            self.backend.describe(name)
        except LbmError:
            return False
        return True

    def _launch(self, run: Run) -> None:
        from lbm.launch.submission import submit

        def record(spec: JobSpec) -> None:
            self.study.set_attr(run.number, JOB, spec.name)
            self.study.set_attr(run.number, ARTIFACT_URI, spec.artifact_uri)

        try:
            submission = self.planner.submission(run.parameters)
            job = submit(submission, self.backend, secrets=self.secrets, before_submit=record)
        except LbmError as error:
            self.study.finish(run.number, None, reason=f"not launched: {error}")
            self.say(f"run {run.number}: FAILED, not launched: {error}")
            return
        self.crash_points.reach("job-submitted")
        self.active[run.number] = job.name
        shown = " ".join(f"{k}={v}" for k, v in run.parameters.items())
        self.say(f"run {run.number}: job {job.name} {shown}")

    def _watch(self) -> None:
        sweep = self.study.sweep
        metric = sweep.metric
        running: set[int] = set()
        for number, name in list(self.active.items()):
            job = self.backend.describe(name)
            if job.state.is_terminal:
                self._finish(number, job.state, job.status_reason, job.artifact_uri)
                del self.active[number]
            elif job.state is JobState.RUNNING:
                running.add(number)
        if sweep.early_terminate is None or metric is None or not running:
            return
        histories = {}
        for trial in self.study.trials():
            uri = trial.user_attrs.get(ARTIFACT_URI)
            if uri is None:
                continue
            if trial.number in self._ended_histories:
                histories[trial.number] = self._ended_histories[trial.number]
                continue
            histories[trial.number] = metric_history(uri, metric.name)
            if trial.state is not TrialState.RUNNING:
                self._ended_histories[trial.number] = histories[trial.number]
        for number, step_values in histories.items():
            if number in running and step_values:
                self.study.report_progress(number, len(step_values), step_values[-1])
        decided = runs_to_stop(sweep.early_terminate, histories, running, metric.goal == "maximize")
        for number, reason in decided.items():
            name = self.active.pop(number)
            with contextlib.suppress(LbmError):  # it may have ended meanwhile
                self.backend.stop(name, reason=reason)
            self.study.stop_early(number, reason)
            self.say(f"run {number}: job {name} stopped early ({reason})")

    def _finish(self, number: int, state: JobState, reason: str | None, artifact_uri: str) -> None:
        metric = self.study.sweep.metric
        if state is not JobState.SUCCEEDED:
            self.study.finish(number, None, reason=f"job {state.value}: {reason or 'no reason given'}")
            self.say(f"run {number}: FAILED ({reason})")
            return
        if metric is None:
            self.study.finish(number, 0.0)
            self.say(f"run {number}: SUCCEEDED")
            return
        history = metric_history(artifact_uri, metric.name)
        if not history:
            self.study.finish(number, None, reason=f"the job logged no {metric.name}")
            self.say(f"run {number}: FAILED (the job logged no {metric.name})")
            return
        self.study.finish(number, history[-1])
        self.say(f"run {number}: SUCCEEDED {metric.name}={history[-1]:.6g}")
