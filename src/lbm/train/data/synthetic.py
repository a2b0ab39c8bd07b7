"""A multitask dataset of the synthetic scene (`lbm.envs.synthetic_reach`) from its scripted expert.

Per step: `image` uint8 [S, S, 3], `agent_pos` float32 [2], `action` float32 [2] (the next target
position, absolute, as in pusht). Same seed, same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lbm.envs import synthetic_reach as scene
from lbm.errors import LbmError
from lbm.train.data.replay_buffer import ReplayBufferWriter


@dataclass(frozen=True)
class SyntheticEpisode:
    """One expert episode of T steps in an arena with `len(goals)` markers."""

    task_index: int
    goals: np.ndarray  # [num_tasks, 2] float64 marker centres (x, y)
    image: np.ndarray  # [T, S, S, 3] uint8
    agent_pos: np.ndarray  # [T, 2] float32
    action: np.ndarray  # [T, 2] float32

    @property
    def goal(self) -> scene.Goal:
        return scene.GOALS[self.task_index]


def scripted_episode(
    rng: np.random.Generator, *, num_tasks: int, task_index: int, image_size: int
) -> SyntheticEpisode:
    """An expert episode for task `task_index`: the scene's expert from a random placement until REACHED."""
    goals, pos = scene.place(rng, num_tasks, task_index)
    goal = goals[task_index]
    positions, actions = [], []
    for _ in range(scene.MAX_STEPS):
        positions.append(pos)
        actions.append(scene.expert_action(pos, goal, rng))
        if scene.expert_done(pos, goal):
            break
        pos = scene.move(pos, actions[-1])
    else:
        raise RuntimeError(f"the expert did not reach its goal in {scene.MAX_STEPS} steps")
    background = scene.render_background(goals, image_size)
    return SyntheticEpisode(
        task_index=task_index,
        goals=goals,
        image=np.stack([scene.render_frame(background, p) for p in positions]),
        agent_pos=np.asarray(positions, dtype=np.float32),
        action=np.asarray(actions, dtype=np.float32),
    )


def check_synthetic_options(num_tasks: int, episodes_per_task: int, image_size: int) -> None:
    """LbmError unless the scene takes num_tasks and image_size, and episodes_per_task >= 1."""
    scene.check_scene_options(num_tasks, image_size)
    if episodes_per_task < 1:
        raise LbmError(f"episodes per task must be >= 1, got {episodes_per_task}")


def write_synthetic_dataset(
    url: str,
    *,
    num_tasks: int = 4,
    episodes_per_task: int = 10,
    image_size: int = 96,
    seed: int = 0,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> None:
    """Write num_tasks * episodes_per_task expert episodes (tasks interleaved) as a replay buffer at `url`."""
    check_synthetic_options(num_tasks, episodes_per_task, image_size)
    with ReplayBufferWriter(url, storage_options=storage_options, overwrite=overwrite) as writer:
        for i in range(num_tasks * episodes_per_task):
            task_index = i % num_tasks
            rng = np.random.default_rng([seed, i])
            episode = scripted_episode(rng, num_tasks=num_tasks, task_index=task_index, image_size=image_size)
            writer.add_episode(
                {"image": episode.image, "agent_pos": episode.agent_pos, "action": episode.action},
                task=episode.goal.task,
                instruction=episode.goal.instruction,
            )
