"""Closed-loop rollouts during training: seeded episodes in the task's environment (`task.env_runner`)
every `training.rollout_every` epochs and at the end, logged as test_mean_score and per-task success."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from lbm.envs.actors import PolicyActor
from lbm.envs.rollout import Evaluation, run_episodes


class TrainingRollouts:
    """The env_runner of a task: `n_test` episodes from `test_start_seed` (seeds no dataset episode uses),
    the first `n_test_vis` of them recorded as videos (values checked by the config schema)."""

    def __init__(self, env_runner: DictConfig, every: int) -> None:
        from lbm.train.trainer import build

        self.episodes = int(env_runner.n_test)
        self.videos = int(env_runner.get("n_test_vis", 0))
        self.start_seed = int(env_runner.test_start_seed)
        self.every = every
        self.suite = build(env_runner.env)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrainingRollouts | None:
        """The rollouts a config asks for; None when its task has no environment."""
        runner = cfg.task.get("env_runner")
        if not runner:
            return None
        return cls(runner, int(cfg.training.get("rollout_every") or 0))

    def due(self, epoch: int, epoch_ended: bool, last_step: bool) -> bool:
        """At the last step, and at the end of every `every`-th epoch (never during training when 0)."""
        return last_step or (epoch_ended and self.every > 0 and epoch % self.every == 0)

    def run(self, policy: Any) -> Evaluation:
        """Roll out `policy` (set to eval mode; the caller restores train mode)."""
        import torch

        with torch.no_grad():
            return run_episodes(
                self.suite,
                PolicyActor(policy, seed=self.start_seed),
                episodes=self.episodes,
                start_seed=self.start_seed,
                record=self.videos,
            )


def describe(evaluation: Evaluation, step: int) -> str:
    """One line for people: overall and per-task successes, and the mean steps to success."""
    per_task = ", ".join(
        f"{task} {sum(e.success for e in evaluation.episodes if e.task == task)}/"
        f"{sum(e.task == task for e in evaluation.episodes)}"
        for task in evaluation.tasks
    )
    successes, episodes = sum(e.success for e in evaluation.episodes), len(evaluation.episodes)
    steps = evaluation.mean_steps_to_success()
    return (
        f"[rollout] step {step}: success rate {evaluation.success_rate:.1%} ({successes}/{episodes}"
        f" episodes; {per_task})"
        + (f", {steps:.1f} steps to success on average" if steps is not None else "")
    )
