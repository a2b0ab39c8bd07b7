"""Named points in an attempt's life at which the agent kills itself (SIGKILL), to test that it survives.

A test setting, inert in normal use: `LBM_AGENT_CRASH_AT=POINT[:N]` makes the agent die the N-th time
(default: the first) it reaches POINT. The agent reads it once, as it starts, and removes it from its
environment, so neither its jobs nor an agent started after it inherit it; without it every point is a no-op.
The points, in the order an attempt meets them:

- `claimed`: the job's row says STARTING and the attempt row is inserted; the transaction is not committed
- `starting-written`: STARTING and the attempt row are committed; no attempt lock or runner yet
- `runner-spawned`: the runner process exists and holds the attempt lock; its pid is not in the store
- `pid-recorded`: the runner's pid is in the attempt row; the transaction (with RUNNING) is not committed
- `running-written`: RUNNING is committed
- `exit-file-written`: the agent has found how the attempt ended (its exit file, or that its runner is gone)
  and not yet settled it
- `settled`: the attempt's end and the job's next state (SUCCEEDED, FAILED or RUNNABLE) are committed
- `retry-queued`: as `settled`, reached only when the job went back to RUNNABLE for another attempt
"""

from __future__ import annotations

import logging
import os
import signal

from lbm.errors import LbmError

ENV = "LBM_AGENT_CRASH_AT"
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
    def from_environment(cls) -> CrashPoints:
        """The setting in $LBM_AGENT_CRASH_AT, taken out of this process's environment."""
        setting = os.environ.pop(ENV, "")
        if not setting:
            return cls()
        point, _, count = setting.partition(":")
        if point not in POINTS or not (count or "1").isdigit() or int(count or "1") < 1:
            raise LbmError(f"{ENV}={setting!r} is not POINT[:N] (N ≥ 1), POINT one of {', '.join(POINTS)}")
        return cls(point, int(count or "1"))

    def reach(self, point: str) -> None:
        """Die here (SIGKILL, as `kill -9` would) if this is the point and occurrence asked for."""
        if point != self.point:
            return
        self.reached += 1
        if self.reached == self.occurrence:
            log.warning("crash point %s reached (occurrence %d): killing the agent", point, self.reached)
            os.kill(os.getpid(), signal.SIGKILL)
