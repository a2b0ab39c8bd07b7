"""Closed-loop rollouts: a policy acts in a suite's environments, episodes in lockstep, and success counted.

Episode j of a run is task `tasks[j % len(tasks)]` reset with seed `start_seed + j`. Each episode keeps its
last `n_obs_steps` observations (the first one repeated at the start, as diffusion_policy's
MultiStepWrapper does); the actor is asked for the next actions of all unfinished episodes at once and
each episode executes them in turn, ending at the first step that accomplishes its task or at the
environment's `max_steps`. Every environment a run makes is closed when it ends, also when it fails.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lbm.envs.environment import Environment, EnvironmentSuite
from lbm.errors import LbmError


class Actor(Protocol):
    """What chooses actions: observation histories in, the next actions out."""

    n_obs_steps: int

    def __call__(
        self, obs: dict[str, np.ndarray], instructions: list[str], envs: list[Environment]
    ) -> np.ndarray:
        """obs: {key: [B, n_obs_steps, ...]} (images uint8 [H, W, 3]) -> actions [B, k, A] to execute."""


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    steps: int  # steps taken: to success, else the environment's max_steps
    frames: list[np.ndarray] = field(default_factory=list, repr=False)  # rendered, when recorded


@dataclass
class Evaluation:
    """The episodes of one run and what they add up to."""

    episodes: list[EpisodeResult]
    seconds: float = 0.0

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(e.task for e in self.episodes))

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.success for e in self.episodes])) if self.episodes else 0.0

    def task_success_rate(self, task: str) -> float:
        return float(np.mean([e.success for e in self.episodes if e.task == task]))

    def mean_steps_to_success(self, task: str | None = None) -> float | None:
        steps = [e.steps for e in self.episodes if e.success and task in (None, e.task)]
        return float(np.mean(steps)) if steps else None

    def metrics(self) -> dict[str, float]:
        """`test_mean_score` (the success rate, diffusion_policy's name), `test_success_<task>` per task and
        `test_mean_steps` (steps to success) where some episode succeeded."""
        record = {"test_mean_score": self.success_rate}
        record.update({f"test_success_{task}": self.task_success_rate(task) for task in self.tasks})
        steps = self.mean_steps_to_success()
        if steps is not None:
            record["test_mean_steps"] = steps
        return record

    def summary(self) -> dict[str, Any]:
        """What `eval.json` holds: overall and per-task success and steps, and every episode."""
        return {
            "episodes": len(self.episodes),
            "success_rate": self.success_rate,
            "mean_steps_to_success": self.mean_steps_to_success(),
            "seconds": self.seconds,
            "episodes_per_second": len(self.episodes) / self.seconds if self.seconds else None,
            "tasks": {
                task: {
                    "episodes": sum(e.task == task for e in self.episodes),
                    "success_rate": self.task_success_rate(task),
                    "mean_steps_to_success": self.mean_steps_to_success(task),
                }
                for task in self.tasks
            },
            "per_episode": [
                {"task": e.task, "seed": e.seed, "success": e.success, "steps": e.steps}
                for e in self.episodes
            ],
        }


def check_tasks(suite: EnvironmentSuite, tasks: Sequence[str] | None) -> list[str]:
    """`tasks` (all of the suite's when None), each one the suite has; else LbmError."""
    if tasks is None:
        return list(suite.tasks)
    unknown = [t for t in tasks if t not in suite.tasks]
    if unknown or not tasks:
        raise LbmError(
            f"unknown task(s) {', '.join(unknown) or '(none given)'}; the environment has "
            f"{', '.join(suite.tasks)}"
        )
    return list(tasks)


def run_episodes(
    suite: EnvironmentSuite,
    actor: Actor,
    *,
    episodes: int,
    tasks: Sequence[str] | None = None,
    start_seed: int = 0,
    record: int = 0,
) -> Evaluation:
    """Roll out `episodes` episodes (see the module docstring); the first `record` keep their frames."""
    import time

    if episodes < 1:
        raise LbmError(f"episodes must be >= 1, got {episodes}")
    tasks = check_tasks(suite, tasks)
    started = time.perf_counter()
    results = [EpisodeResult(tasks[j % len(tasks)], start_seed + j, False, 0) for j in range(episodes)]
    with ExitStack() as made:
        envs = []
        for result in results:
            envs.append(suite.make(result.task))
            made.callback(envs[-1].close)
        _step_in_lockstep(envs, results, actor, record)
    return Evaluation(results, time.perf_counter() - started)


def _step_in_lockstep(
    envs: list[Environment], results: list[EpisodeResult], actor: Actor, record: int
) -> None:
    """Run episode j in envs[j] to its end, filling in results[j]."""
    histories = []
    for j, (env, result) in enumerate(zip(envs, results, strict=True)):
        first = env.reset(result.seed)
        histories.append(deque([first] * actor.n_obs_steps, maxlen=actor.n_obs_steps))
        if j < record:
            result.frames.append(env.render())
    active = list(range(len(envs)))
    while active:
        obs = {
            key: np.stack([np.stack([o[key] for o in histories[i]]) for i in active])
            for key in histories[0][0]
        }
        actions = actor(obs, [envs[i].instruction for i in active], [envs[i] for i in active])
        still_active = []
        for i, chunk in zip(active, actions, strict=True):
            env, result = envs[i], results[i]
            for action in chunk:
                observation, result.success = env.step(action)
                result.steps += 1
                histories[i].append(observation)
                if i < record:
                    result.frames.append(env.render())
                if result.success or result.steps >= env.max_steps:
                    break
            else:
                still_active.append(i)
        active = still_active
