"""A sweep's status as data: its runs (parameters, state, metric), the best one and its artifacts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from lbm.sweeps.engine import ARTIFACT_URI, JOB, PARAMETERS, REASON, STOPPED_EARLY
from lbm.sweeps.record import state_of

if TYPE_CHECKING:
    from lbm.sweeps.engine import SweepStudy
    from lbm.sweeps.record import SweepRecord, SweepSettings

_STATES = {TrialState.RUNNING: "running", TrialState.COMPLETE: "succeeded", TrialState.FAIL: "failed"}


def sweep_status(record: SweepRecord, study: SweepStudy, settings: SweepSettings) -> dict[str, Any]:
    """The sweep's state and runs, newest last, and its best run by the metric (None before one ends)."""
    from lbm.sweeps.engine import redacted

    sweep = study.sweep
    metric = sweep.metric
    runs = []
    for trial in study.trials():
        attrs = trial.user_attrs
        state = (
            "stopped early"
            if attrs.get(STOPPED_EARLY)
            else _STATES.get(trial.state, trial.state.name.lower())
        )
        value = trial.value if trial.state is TrialState.COMPLETE and metric is not None else None
        if value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)] if metric else None
        runs.append(
            {
                "number": trial.number,
                "job": attrs.get(JOB),
                "state": state,
                "value": value,
                "parameters": attrs.get(PARAMETERS, {}),
                "reason": attrs.get(REASON),
                "artifact_uri": attrs.get(ARTIFACT_URI),
            }
        )
    done = [r for r, t in zip(runs, study.trials(), strict=True) if t.state is TrialState.COMPLETE]
    best = None
    if metric is not None and done:
        pick = max if metric.goal == "maximize" else min
        best = pick(done, key=lambda r: r["value"])
    return {
        "name": record.name,
        "storage": redacted(record.storage_url),
        "state": state_of(study),
        "method": sweep.method,
        "metric": None
        if metric is None
        else {"name": metric.name, "goal": metric.goal, "target": metric.target},
        "run_cap": settings.cap,
        "max_agents": settings.max_agents,
        "runs_made": len(runs),
        "runs": runs,
        "best": best,
    }
