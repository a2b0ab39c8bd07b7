"""Where a Meta-World policy's failed episodes end: close to the goal but not within its success radius, or
somewhere else; with the goal inside or outside the range of the demonstrations' goals, whether the gripper
closed (reach's expert never closes it: a reach episode that does acts out another task), and in
pick-place how far beside the object (horizontally) the hand was when the gripper first closed, and whether
the object was ever lifted.

Rolls out each checkpoint's EMA policy with `lbm eval`'s rollouts for --episodes episodes of each of --tasks
(seeds from the config's test_start_seed) and follows Meta-World's own distance at every step
(`info["obj_to_target"]`: the gripper's centre to the goal in reach, the object to the goal in push and
pick-place). A failed episode "ends close" when its last distance is within --close metres beyond the
success radius. The demonstrations' goals are those of the checkpoint's dataset (task.dataset_path), per
task. Torch uses --threads threads.

    OMP_NUM_THREADS=1 python benchmarks/metaworld_failures.py --episodes 20 \
        --checkpoint /tmp/mt10/run/epoch_60-step_1380.ckpt
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np

from lbm.envs.meta_world import MetaWorldEnv, MetaWorldSuite

# Meta-World's success radius of info["obj_to_target"] per task (the tasks' evaluate_state).
SUCCESS_RADIUS = {"reach-v3": 0.05, "push-v3": 0.05, "pick-place-v3": 0.07}
GOAL, HAND_XY, OBJECT_XY = slice(36, 39), slice(0, 2), slice(4, 6)
GRIPPER_OPENING, OBJECT_HEIGHT = 3, 6
# Columns of a TracedEnv's trace.
DISTANCE, HEIGHT, OPENING, BESIDE = range(4)
CLOSED = 0.5  # gripper opening (1: open) below which the gripper is closed
LIFTED = 0.02  # metres above the object's first height


class TracedEnv(MetaWorldEnv):
    """A Meta-World task that keeps its goal, the object's first height, and per step (`trace`: steps x
    columns) the distance to the goal, the object's height, the gripper's opening and the hand's horizontal
    distance from the object."""

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        obs = super().reset(seed)
        self.goal, self.first_height, self.steps = obs["state"][GOAL].copy(), obs["state"][OBJECT_HEIGHT], []
        return obs

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool]:
        obs, success = super().step(action)
        state = obs["state"]
        beside = np.linalg.norm(state[HAND_XY] - state[OBJECT_XY])
        self.steps.append((self.info["obj_to_target"], state[OBJECT_HEIGHT], state[GRIPPER_OPENING], beside))
        return obs, success

    @property
    def trace(self) -> np.ndarray:
        return np.array(self.steps)


class TracedSuite(MetaWorldSuite):
    """The suite's tasks as TracedEnvs, each kept in `envs` in the order made."""

    envs: list[TracedEnv]

    def make(self, task: str) -> TracedEnv:
        env = TracedEnv(task, self.image_size, self.camera, self.max_steps)
        self.envs = [*getattr(self, "envs", []), env]
        return env


def demo_goal_ranges(dataset_path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{task: (lowest, highest) goal over its demonstrations}."""
    from lbm.train.data.replay_buffer import ReplayBuffer

    buffer = ReplayBuffer.open(dataset_path)
    goals: dict[str, list[np.ndarray]] = {}
    state = buffer["state"]
    for k, task in enumerate(buffer.episode_tasks):
        goals.setdefault(task, []).append(state[buffer.episode_slice(k).start][GOAL])
    return {task: (np.min(g, axis=0), np.max(g, axis=0)) for task, g in goals.items()}


def report(checkpoint: str, tasks: list[str], episodes: int, close: float) -> None:
    from lbm.envs.actors import PolicyActor
    from lbm.envs.rollout import run_episodes
    from lbm.train.trained_policy import load_policy

    policy, cfg = load_policy(checkpoint)
    runner = cfg.task.env_runner
    ranges = demo_goal_ranges(cfg.task.dataset_path)
    seed = int(runner.test_start_seed)
    print(checkpoint)
    print(
        f"{'task':<16}{'success':>9}{'failed':>8}{'ends close':>12}{'elsewhere':>11}{'closest':>9}"
        f"{'last':>7}{'goal outside demos (failed/ok)':>32}{'gripper closed':>16}{'closed beside':>15}"
        f"{'never lifted':>14}"
    )
    for task in tasks:
        suite = TracedSuite([task], max_steps=int(runner.env.max_steps))
        evaluation = run_episodes(
            suite, PolicyActor(policy, seed=seed), episodes=episodes, tasks=[task], start_seed=seed
        )
        radius = SUCCESS_RADIUS[task]
        low, high = ranges[task]
        failed = [env for env, e in zip(suite.envs, evaluation.episodes, strict=True) if not e.success]
        succeeded = [env for env, e in zip(suite.envs, evaluation.episodes, strict=True) if e.success]
        traces = [env.trace for env in failed]
        last = [trace[-1, DISTANCE] for trace in traces]
        outside = [bool(np.any(env.goal < low) or np.any(env.goal > high)) for env in (*failed, *succeeded)]
        closes = [trace[trace[:, OPENING] < CLOSED] for trace in traces]
        beside = [steps[0, BESIDE] for steps in closes if len(steps)]
        lifted = [env.trace[:, HEIGHT].max() >= env.first_height + LIFTED for env in failed]

        def median(values: list[float]) -> str:
            return f"{statistics.median(values):.3f}" if values else "-"

        carries = task == "pick-place-v3"
        print(
            f"{task:<16}{len(succeeded):>5}/{episodes:<3}{len(failed):>8}"
            f"{sum(d <= radius + close for d in last):>12}{sum(d > radius + close for d in last):>11}"
            f"{median([trace[:, DISTANCE].min() for trace in traces]):>9}{median(last):>7}"
            f"{sum(outside[: len(failed)]):>26}/{sum(outside[len(failed) :])}{len(beside):>16}"
            f"{median(beside) if carries else '':>15}{lifted.count(False) if carries else '':>14}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, nargs="+")
    parser.add_argument("--tasks", nargs="+", default=["reach-v3", "pick-place-v3"], choices=SUCCESS_RADIUS)
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task")
    parser.add_argument(
        "--close", type=float, default=0.05, help="metres beyond the radius that count as close"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    for checkpoint in args.checkpoint:
        report(checkpoint, args.tasks, args.episodes, args.close)


if __name__ == "__main__":
    main()
