"""Named points at which a process that must survive `kill -9` (the local agent, a sweep's controller) kills
itself (SIGKILL), to test that a restarted one loses and repeats nothing.

A test setting, inert in normal use: `LBM_AGENT_CRASH_AT=POINT[:N]` (the controller: `LBM_SWEEP_CRASH_AT`)
makes the process die the N-th time (default: the first) it reaches POINT. It reads the setting once, as it
starts, and removes it from its environment, so neither its jobs nor a process started after it inherit it;
without it every point is a no-op. The agent's points, in the order an attempt meets them:

- `claimed`: the job's row says STARTING and the attempt row is inserted; the transaction is not committed
- `starting-written`: STARTING and the attempt row are committed; no attempt lock or runner yet
- `runner-spawned`: the runner process exists and holds the attempt lock; its pid is not in the store
- `pid-recorded`: the runner's pid is in the attempt row; the transaction (with RUNNING) is not committed
- `running-written`: RUNNING is committed
- `exit-file-written`: the agent has found how the attempt ended (its exit file, or that its runner is gone)
  and not yet settled it
- `settled`: the attempt's end and the job's next state (SUCCEEDED, FAILED or RUNNABLE) are committed
- `retry-queued`: as `settled`, reached only when the job went back to RUNNABLE for another attempt

The controller's point: `job-submitted`, a run's job is queued and the run does not yet say it has it.
"""

from __future__ import annotations

import logging
import os
import signal

from lbm.errors import LbmError

ENV = "LBM_AGENT_CRASH_AT"
SWEEP_ENV = "LBM_SWEEP_CRASH_AT"
SWEEP_POINTS = ("job-submitted",)
POINTS = (
    "claimed",
    "starting-written",
    "runner-spawned",
    "pid-recorded",
    "running-written",
    "exit-file-written",
    "settled",
    "retry-queued",
)

log = logging.getLogger("lbm.agent")


class CrashPoints:
    """Where this agent kills itself: at the `occurrence`-th time it reaches `point` (None: never)."""

    def __init__(self, point: str | None = None, occurrence: int = 1):
        self.point = point
        self.occurrence = occurrence
        self.reached = 0

    @classmethod
    def from_environment(cls, env: str = ENV, points: tuple[str, ...] = POINTS) -> CrashPoints:
        """The setting in $`env` (the agent's by default), taken out of this process's environment."""
        setting = os.environ.pop(env, "")
        if not setting:
            return cls()
        point, _, count = setting.partition(":")
        if point not in points or not (count or "1").isdigit() or int(count or "1") < 1:
            raise LbmError(f"{env}={setting!r} is not POINT[:N] (N ≥ 1), POINT one of {', '.join(points)}")
        return cls(point, int(count or "1"))

    def reach(self, point: str) -> None:
        """Die here (SIGKILL, as `kill -9` would) if this is the point and occurrence asked for."""
        if point != self.point:
            return
        self.reached += 1
        if self.reached == self.occurrence:
            log.warning("crash point %s reached (occurrence %d): killing this process", point, self.reached)
            os.kill(os.getpid(), signal.SIGKILL)
