"""What a suite of environments and an environment provide to rollouts (the protocol a new suite, such as
Meta-World, implements as one more module)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Environment(Protocol):
    """One task of a suite: episodes of at most `max_steps` steps.

    Observations are {key: array} with the keys and shapes of the task's shape_meta (images uint8
    [H, W, 3], low-dim values float [D]); an action is float [A] in the dataset's raw units.
    """

    task: str
    instruction: str
    max_steps: int

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        """Start an episode whose configuration is drawn from `seed`; the first observation."""

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool]:
        """Apply `action`; the next observation and whether the task is accomplished now."""

    def render(self) -> np.ndarray:
        """The scene as a person would look at it: uint8 [H, W, 3]."""

    def close(self) -> None:
        """Release what the environment holds (a renderer's GL context); it is not used again."""


class EnvironmentSuite(Protocol):
    """The tasks of a benchmark and a way to make the environment of each."""

    tasks: list[str]

    def make(self, task: str) -> Environment:
        """A new environment of `task` (LbmError for a task the suite lacks)."""
