"""Expert demonstrations in Meta-World (`lbm.envs.meta_world`) as a multitask replay buffer.

Per step: `state` float32 [39], `action` float32 [4] in [-1, 1] (the scripted expert's), and with an image
size `image` uint8 [S, S, 3]. Each episode starts from a new seeded configuration (a task's attempts use
seeds `seed`, `seed + 1`, ...; keep them below the rollouts' test_start_seed), is kept only when it succeeds
within the task's step limit, and goes on for `steps_after_success` steps of the expert after the step the
task first succeeds (within the step limit): a policy that sees only the approach up to the edge of the
success region learns to stop at that edge, half of the time just outside it (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lbm.envs.meta_world import MetaWorldEnv, resolve_tasks
from lbm.errors import LbmError
from lbm.train.data.replay_buffer import ReplayBufferWriter

# A task whose expert fails this many times per demonstration asked for is refused.
MAX_ATTEMPTS_PER_EPISODE = 3
# Ten demonstrations per task cover too few configurations for MT10 from the state (BENCHMARKS.md).
EPISODES_PER_TASK = 30
STEPS_AFTER_SUCCESS = 16


@dataclass(frozen=True)
class ExpertRecord:
    """How the scripted expert did on one task: successes of attempts, and the steps of the successful."""

    task: str
    attempts: int
    successes: int
    steps: list[int]  # to the first success

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts


def expert_episode(
    env: MetaWorldEnv, seed: int, steps_after_success: int = 0
) -> tuple[dict[str, np.ndarray], int] | None:
    """The expert's episode from `seed` ({key: [T, ...]}) to `steps_after_success` steps after its first
    success, or to the step limit if that comes first, and the number of steps to that success; None when
    it does not succeed."""
    obs = env.reset(seed)
    steps: dict[str, list[np.ndarray]] = {key: [] for key in [*obs, "action"]}
    succeeded_at = None
    for t in range(env.max_steps):
        if succeeded_at is not None and t == succeeded_at + steps_after_success:
            break
        action = env.expert_action()
        for key, value in obs.items():
            steps[key].append(value)
        steps["action"].append(action)
        obs, success = env.step(action)
        if success and succeeded_at is None:
            succeeded_at = t + 1
    if succeeded_at is None:
        return None
    return {key: np.stack(values) for key, values in steps.items()}, succeeded_at


def write_metaworld_dataset(
    url: str,
    *,
    tasks: str | Sequence[str] = "mt10",
    episodes_per_task: int = EPISODES_PER_TASK,
    steps_after_success: int = STEPS_AFTER_SUCCESS,
    image_size: int | None = None,
    camera: str = "corner2",
    seed: int = 0,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> list[ExpertRecord]:
    """Write `episodes_per_task` successful expert episodes of each task (task after task) at `url`."""
    names = resolve_tasks(tasks)
    if episodes_per_task < 1:
        raise LbmError(f"episodes per task must be >= 1, got {episodes_per_task}")
    if steps_after_success < 0:
        raise LbmError(f"steps after success must be >= 0, got {steps_after_success}")
    if image_size is not None and image_size < 8:
        raise LbmError(f"image size must be at least 8 pixels, got {image_size}")
    records = []
    with ReplayBufferWriter(url, storage_options=storage_options, overwrite=overwrite) as writer:
        for task in names:
            env = MetaWorldEnv(task, image_size=image_size, camera=camera)
            attempts, steps = 0, []
            while len(steps) < episodes_per_task:
                if attempts == MAX_ATTEMPTS_PER_EPISODE * episodes_per_task:
                    raise LbmError(
                        f"the scripted expert of {task} succeeded {len(steps)} times in {attempts} attempts; "
                        f"ask for fewer episodes per task"
                    )
                recorded = expert_episode(env, seed + attempts, steps_after_success)
                attempts += 1
                if recorded is not None:
                    episode, to_success = recorded
                    writer.add_episode(episode, task=task, instruction=env.instruction)
                    steps.append(to_success)
            env.close()
            records.append(ExpertRecord(task, attempts, len(steps), steps))
    return records
