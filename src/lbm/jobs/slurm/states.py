"""Slurm's job states as lbm's: PENDING -> RUNNABLE (with the pending reason), COMPLETED -> SUCCEEDED..."""

from __future__ import annotations

from lbm.jobs.model import JobState, StatusReason

# Pending reasons that mean the job is not yet eligible to run (lbm's PENDING: waiting on something other
# than the scheduler); every other pending reason (Priority, Resources, QOS...) is RUNNABLE.
NOT_ELIGIBLE_REASONS = frozenset(
    {
        "Dependency",
        "DependencyNeverSatisfied",
        "BeginTime",
        "JobHeldUser",
        "JobHeldAdmin",
        "JobArrayTaskLimit",
    }
)
ACTIVE = {
    "CONFIGURING": JobState.STARTING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
}
QUEUED_AGAIN = frozenset({"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"})
FAILED = frozenset(
    {
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
FAILURE_REASONS = {
    "CANCELLED": "cancelled",
    "TIMEOUT": StatusReason.TIMED_OUT,
    "NODE_FAIL": "node failure",
    "PREEMPTED": "preempted",
    "OUT_OF_MEMORY": "out of memory",
    "BOOT_FAIL": "node failed to boot",
    "DEADLINE": "deadline passed",
    "REVOKED": "revoked",
    "SPECIAL_EXIT": "special exit",
}


def base_state(slurm_state: str) -> str:
    """The state's name without flags or the user in `CANCELLED by 0` (sacct's text form)."""
    return slurm_state.split()[0].split("+")[0].upper() if slurm_state.strip() else ""


def job_state(
    slurm_state: str, reason: str | None = None, exit_code: int | None = None
) -> tuple[JobState, str | None]:
    """(lbm state, status reason) for a Slurm job state, its reason field and its exit code."""
    state = base_state(slurm_state)
    reason = None if reason in (None, "", "None") else reason
    if state == "PENDING":
        return (JobState.PENDING if reason in NOT_ELIGIBLE_REASONS else JobState.RUNNABLE), reason
    if state in QUEUED_AGAIN:
        return JobState.PENDING, reason or "requeued"
    if state in ACTIVE:
        return ACTIVE[state], "suspended" if state == "SUSPENDED" else None
    if state == "COMPLETED":
        return JobState.SUCCEEDED, None
    if state == "FAILED":
        return JobState.FAILED, StatusReason.exit_code(exit_code) if exit_code is not None else "failed"
    if state in FAILED:
        return JobState.FAILED, FAILURE_REASONS[state]
    raise ValueError(f"unknown Slurm job state {slurm_state!r}")
