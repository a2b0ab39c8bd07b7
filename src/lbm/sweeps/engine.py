"""The Optuna study behind a sweep: which parameters each run gets, its result, and the run cap.

Grid points and random draws are W&B's (a run's trial number picks its grid point and seeds its draw, so
no point runs twice and several controllers never draw alike); bayes asks a model-based Optuna sampler.
Trial numbers are handed out by the storage in order, so the cap holds across agents, controllers and
machines: a trial numbered at or beyond the cap is closed at once and never runs.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from lbm.errors import LbmError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

    from lbm.sweeps.sweep_file import SweepFile

optuna.logging.set_verbosity(optuna.logging.WARNING)

BEYOND_CAP = "beyond_cap"
PARAMETERS = "parameters"
JOB = "job"
ARTIFACT_URI = "artifact_uri"
CONTROLLER = "controller"
REASON = "reason"
STOPPED_EARLY = "stopped_early"
# Tries to open a storage or study that another controller is creating at the same moment.
OPEN_TRIES = 5
# The table of the sweep's database that records which controller took over which run (Takeovers).
TAKEOVERS_TABLE = "lbm_sweep_takeovers"
# Trials a bayes sampler draws at random before its model takes over.
BAYES_STARTUP_TRIALS = 3
# The trial number from which bayes asks TPE instead of the Gaussian process, whose fit grows with the cube
# of the study's size.
BAYES_GP_TRIALS = 200


def bayes_sampler(seed: int) -> BaseSampler:
    """The model-based sampler of method bayes: a Gaussian process (Optuna's GPSampler) after a few random
    runs, and multivariate TPE once the study holds BAYES_GP_TRIALS runs (chosen on
    benchmarks/sweep_sample_efficiency.py, other seeds than its own). Runs still going are conditioned on
    (the GP's batch expected improvement, TPE's constant liar), so parallel agents spread out."""
    return GPThenTPESampler(seed, BAYES_GP_TRIALS)


def gp_sampler(seed: int) -> BaseSampler:
    """Optuna's Gaussian-process sampler after BAYES_STARTUP_TRIALS random runs."""
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=BAYES_STARTUP_TRIALS)


def tpe_sampler(seed: int) -> BaseSampler:
    """Multivariate TPE with its prior weighted double; runs still going count as lies."""
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=BAYES_STARTUP_TRIALS,
        multivariate=True,
        prior_weight=2.0,
        constant_liar=True,
    )


class GPThenTPESampler(BaseSampler):
    """The GP for trials numbered below `gp_trials` (its torch on one thread), TPE from there and in place of
    a GP proposal that some run already has (a point run before can still have the best expected
    improvement); each sampler made when first asked."""

    def __init__(self, seed: int, gp_trials: int):
        self._seed, self._gp_trials = seed, gp_trials
        self._made: dict[Callable[[int], BaseSampler], BaseSampler] = {}

    def _sampler(self, make: Callable[[int], BaseSampler]) -> BaseSampler:
        if make not in self._made:
            self._made[make] = make(self._seed)
        return self._made[make]

    def sampler_for(self, trial: FrozenTrial) -> BaseSampler:
        return self._sampler(gp_sampler if trial.number < self._gp_trials else tpe_sampler)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler_for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self.sampler_for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        sampler = self.sampler_for(trial)
        if not isinstance(sampler, optuna.samplers.GPSampler) or not self._gp_models(study):
            return sampler.sample_relative(study, trial, search_space)  # no torch: TPE, or random start-up
        with one_torch_thread():
            proposal = sampler.sample_relative(study, trial, search_space)
        if any(t.params == proposal for t in study.get_trials(deepcopy=False) if t.number != trial.number):
            return self._sampler(tpe_sampler).sample_relative(study, trial, search_space)
        return proposal

    @staticmethod
    def _gp_models(study: optuna.Study) -> bool:
        """Whether the GP has its start-up runs and fits its model (with torch)."""
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= BAYES_STARTUP_TRIALS

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.sampler_for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001 - Optuna's signature
        self.sampler_for(trial).after_trial(study, trial, state, values)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread meanwhile: the GP's many small operations are several times slower when its
    thread pool contends for the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class TrialSeededSampler(BaseSampler):
    """A sampler made afresh for each trial with a seed from the sweep's seed and the trial number, so a
    trial's draws do not depend on which controller asked for it (and a preview shows what runs)."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make(self._seed * 1_000_003 + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001 - Optuna's signature
        self._inner.after_trial(study, trial, state, values)


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its trial number and the values of its parameters (dotted keys)."""

    number: int
    parameters: dict[str, Any]


def storage_for(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage at an SQLAlchemy URL (sqlite:///..., postgresql+psycopg://...).

    Controllers that open a new database at the same moment race to create its tables: the loser tries
    again.
    """
    sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(OPEN_TRIES):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            if sqlite:
                from sqlalchemy import event

                event.listen(storage.engine, "connect", _sqlite_wal)
                storage.engine.dispose()  # connections from now on are set up by _sqlite_wal
            return storage
        except Exception as error:  # noqa: BLE001 - any failure to reach the database is the user's to fix
            if attempt == OPEN_TRIES - 1:
                reason = " ".join(str(error).split())[:300]
                raise LbmError(f"cannot open the sweep storage {redacted(url)}: {reason}") from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _sqlite_wal(connection: Any, _record: Any) -> None:
    """Write-ahead log, synced at checkpoints: a commit no longer waits on the disk (safe against a crash
    of the process, which is what a controller must survive)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def redacted(url: str) -> str:
    """The storage URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: show nothing of it
        return "<storage url>"


def run_cap(sweep: SweepFile, max_runs: int | None) -> int | None:
    """How many runs the sweep makes: the least of --max-runs, run_cap and the grid's size (None: no end)."""
    caps = [c for c in (max_runs, sweep.run_cap) if c is not None]
    if sweep.method == "grid":
        caps.append(len(sweep.grid()))
    return min(caps) if caps else None


class SweepStudy:
    """A sweep's Optuna study: hands out runs up to the cap and records their outcome."""

    def __init__(
        self,
        sweep: SweepFile,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        cap: int | None,
        seed: int,
    ):
        self.sweep, self.study, self.storage, self.cap, self.seed = sweep, study, storage, cap, seed
        self._grid = sweep.grid() if sweep.method == "grid" else None
        self._no_more = False  # this object has seen the cap reached
        self._takeovers = Takeovers.of(storage)

    @classmethod
    def open(
        cls,
        sweep: SweepFile,
        storage: optuna.storages.BaseStorage | str,
        name: str,
        cap: int | None,
        seed: int,
        make_bayes_sampler: Callable[[int], BaseSampler] = bayes_sampler,
    ) -> SweepStudy:
        """The study `name` in `storage` (created when it is not there); `make_bayes_sampler(seed)` makes
        the sampler of method bayes."""
        if isinstance(storage, str):
            storage = storage_for(storage)
        direction = "maximize" if sweep.metric and sweep.metric.goal == "maximize" else "minimize"
        sampler = (
            TrialSeededSampler(make_bayes_sampler, seed)
            if sweep.method == "bayes"
            else optuna.samplers.RandomSampler(seed)
        )
        for attempt in range(OPEN_TRIES):
            try:
                study = optuna.create_study(
                    storage=storage,
                    study_name=name,
                    direction=direction,
                    sampler=sampler,
                    load_if_exists=True,
                )
                break
            except Exception:  # another controller creates the same study at the same moment
                if attempt == OPEN_TRIES - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return cls(sweep, study, storage, cap, seed)

    # --- handing out runs ----------------------------------------------------------------------------------

    def trials(self) -> list[FrozenTrial]:
        """The sweep's runs as trials (those beyond the cap left out), in order."""
        return [t for t in self.study.get_trials(deepcopy=False) if not t.user_attrs.get(BEYOND_CAP)]

    def exhausted(self) -> bool:
        """No more runs: the cap is reached, or a run met the metric's target."""
        if self.cap is not None and len(self.trials()) >= self.cap:
            return True
        return self._target_met()

    def _target_met(self) -> bool:
        metric = self.sweep.metric
        if metric is None or metric.target is None:
            return False
        return any(
            metric.reached(t.value) for t in self.study.get_trials(False, states=(TrialState.COMPLETE,))
        )

    def next_run(self) -> Run | None:
        """A new run with its parameters, or None when the sweep has made all its runs."""
        if self._no_more or self._target_met():
            return None
        trial = self.study.ask()
        if self.cap is not None and trial.number >= self.cap:
            trial.set_user_attr(BEYOND_CAP, True)
            self.study.tell(trial, state=TrialState.FAIL)
            self._no_more = True
            return None
        trial.set_user_attr(CONTROLLER, controller_id())
        return self._parameters_of(trial)

    def take_over(self, number: int, previous: str | None) -> bool:
        """Whether this controller takes run `number` over from its controller `previous` (None: none was
        named), which is gone: of several controllers that try at once, exactly one does."""
        trial_id = self.trial(number)._trial_id
        if not self._takeovers.claim(trial_id, previous or "", controller_id()):
            return False
        self.storage.set_trial_user_attr(trial_id, CONTROLLER, controller_id())
        return True

    def parameters(self, number: int) -> Run:
        """The run `number` with its parameters (drawn now if its controller died before it drew them)."""
        return self._parameters_of(optuna.Trial(self.study, self.trial(number)._trial_id))

    def _parameters_of(self, trial: optuna.Trial) -> Run:
        saved = trial.user_attrs.get(PARAMETERS)
        parameters = saved if saved is not None else self.point(trial)
        if saved is None:
            trial.set_user_attr(PARAMETERS, parameters)
        return Run(trial.number, parameters)

    def point(self, trial: optuna.Trial) -> dict[str, Any]:
        """The parameter values of `trial`: its grid point, its W&B draw, or the bayes sampler's proposal."""
        if self._grid is not None:
            return self._grid[trial.number]
        if self.sweep.method == "random":
            return draw_point(self.sweep, self.seed, trial.number)
        return {key: parameter.suggest(trial) for key, parameter in self.sweep.parameters.items()}

    # --- outcomes ------------------------------------------------------------------------------------------

    def trial(self, number: int) -> FrozenTrial:
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number == number:
                return trial
        raise LbmError(f"sweep {self.study.study_name} has no run {number}")

    def set_attr(self, number: int, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial(number)._trial_id, key, value)

    def report_progress(self, number: int, step: int, value: float) -> None:
        """An intermediate value of the metric (hyperband compares runs by these)."""
        self.storage.set_trial_intermediate_value(self.trial(number)._trial_id, step, value)

    def finish(self, number: int, value: float | None, reason: str | None = None) -> None:
        """Close run `number`: with the metric's value (COMPLETE), or failed with `reason`; a run closed
        already (by another controller, or by `lbm sweep stop`) keeps its first outcome."""
        attrs = {} if reason is None else {REASON: reason}
        if value is None:
            self._close(number, attrs, state=TrialState.FAIL)
        else:
            self._close(number, attrs, values=value)

    def stop_early(self, number: int, reason: str) -> None:
        """Close run `number` as stopped by hyperband (PRUNED, its last value kept)."""
        self._close(number, {STOPPED_EARLY: True, REASON: reason}, state=TrialState.PRUNED)

    def _close(self, number: int, attrs: dict[str, Any], **outcome: Any) -> None:
        try:
            for key, value in attrs.items():
                self.set_attr(number, key, value)
            self.study.tell(number, skip_if_finished=True, **outcome)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # closed meanwhile: the first outcome stands


class Takeovers:
    """Which controller took each run over from which: a row per (trial, previous controller), so one
    controller alone takes a run over from a dead one (a compare-and-set Optuna's storage lacks). Kept in a
    table of the sweep's own database; a storage in memory belongs to one process and needs none."""

    def __init__(self, engine: Any | None):
        self._engine = engine
        self._table = None
        if engine is None:
            return
        import sqlalchemy as sa

        self._table = sa.Table(
            TAKEOVERS_TABLE,
            sa.MetaData(),
            sa.Column("trial_id", sa.Integer, primary_key=True),
            sa.Column("taken_from", sa.String(512), primary_key=True),
            sa.Column("taken_by", sa.String(512), nullable=False),
        )
        for attempt in range(OPEN_TRIES):
            try:
                self._table.create(engine, checkfirst=True)
                return
            except Exception:  # another controller creates the table at the same moment
                if attempt == OPEN_TRIES - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    @classmethod
    def of(cls, storage: optuna.storages.BaseStorage) -> Takeovers:
        return cls(getattr(storage, "engine", None))

    def claim(self, trial_id: int, taken_from: str, taken_by: str) -> bool:
        """Whether `taken_by` is the one controller that takes the trial over from `taken_from`."""
        if self._engine is None:
            return True
        import sqlalchemy as sa

        try:
            with self._engine.begin() as connection:
                connection.execute(
                    sa.insert(self._table).values(trial_id=trial_id, taken_from=taken_from, taken_by=taken_by)
                )
        except sa.exc.IntegrityError:
            return False
        return True


def draw_point(sweep: SweepFile, seed: int, number: int) -> dict[str, Any]:
    """Run `number`'s random draw of every parameter (W&B's distributions), the same on any machine."""
    import numpy as np

    rng = np.random.default_rng([seed, number])
    return {key: p.draw(rng) for key, p in sweep.parameters.items()}


def controller_id() -> str:
    """This process as a controller: `host:pid`."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


def preview(sweep: SweepFile, runs: int, seed: int) -> list[dict[str, Any]]:
    """The parameters of the first `runs` runs (for bayes: its random start-up runs), computed by the same
    engine on a study in memory."""
    if sweep.method == "bayes":
        runs = min(runs, BAYES_STARTUP_TRIALS)
    study = SweepStudy.open(sweep, optuna.storages.InMemoryStorage(), "preview", run_cap(sweep, runs), seed)
    points = []
    while (run := study.next_run()) is not None:
        points.append(run.parameters)
    return points
