"""Rollouts: episodes in lockstep, n actions executed per prediction, observation history, success."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

from lbm.envs import synthetic_reach as scene
from lbm.envs.actors import ScriptedExpert
from lbm.envs.rollout import run_episodes
from lbm.errors import LbmError


class RecordingExpert:
    """The scripted expert planning `chunk` steps ahead from the last observation; records what it saw."""

    def __init__(self, n_obs_steps: int, chunk: int):
        self.n_obs_steps, self.chunk, self.calls = n_obs_steps, chunk, []

    def __call__(self, obs, instructions, envs):
        self.calls.append({"obs": obs, "instructions": instructions})
        plans = []
        for env, pos in zip(envs, obs["agent_pos"][:, -1].astype(np.float64), strict=True):
            goal, plan = env._goals[env.task_index], []
            for _ in range(self.chunk):
                pos = scene.move(pos, scene.expert_action(pos, goal, np.random.default_rng(0)))
                plan.append(pos)
            plans.append(plan)
        return np.asarray(plans)


def test_episodes_take_tasks_in_turn_with_consecutive_seeds_and_end_at_success():
    suite = scene.SyntheticReachSuite(num_tasks=3, image_size=16)
    actor = RecordingExpert(n_obs_steps=2, chunk=8)
    evaluation = run_episodes(suite, actor, episodes=5, start_seed=40, record=1)
    assert [(e.task, e.seed) for e in evaluation.episodes] == [
        ("reach_red", 40),
        ("reach_green", 41),
        ("reach_blue", 42),
        ("reach_red", 43),
        ("reach_green", 44),
    ]
    assert evaluation.success_rate == 1.0
    first = actor.calls[0]
    assert first["obs"]["image"].shape == (5, 2, 16, 16, 3) and first["obs"]["agent_pos"].shape == (5, 2, 2)
    # The history starts as the first observation twice; later calls see the last two steps.
    np.testing.assert_array_equal(first["obs"]["image"][:, 0], first["obs"]["image"][:, 1])
    assert not np.array_equal(
        actor.calls[1]["obs"]["agent_pos"][:, 0], actor.calls[1]["obs"]["agent_pos"][:, 1]
    )
    assert first["instructions"][:3] == [
        "reach the red square",
        "reach the green circle",
        "reach the blue triangle",
    ]
    # 8 actions per call: an episode of S steps was asked ceil(S / 8) times; finished ones are not asked.
    longest = max(e.steps for e in evaluation.episodes)
    assert len(actor.calls) == -(-longest // 8)
    assert len(actor.calls[-1]["instructions"]) < 5
    recorded = evaluation.episodes[0]
    assert len(recorded.frames) == recorded.steps + 1 and not evaluation.episodes[1].frames
    summary = evaluation.summary()
    assert summary["tasks"]["reach_red"]["episodes"] == 2 and summary["success_rate"] == 1.0
    metrics = evaluation.metrics()
    assert metrics["test_mean_score"] == 1.0 and set(metrics) >= {
        "test_success_reach_blue",
        "test_mean_steps",
    }


def test_an_episode_stops_at_max_steps():
    suite = scene.SyntheticReachSuite(num_tasks=2, image_size=16, max_steps=10)
    evaluation = run_episodes(suite, ScriptedExpert(), episodes=2)
    assert [e.steps for e in evaluation.episodes] == [10, 10]
    assert evaluation.success_rate == 0.0 and evaluation.mean_steps_to_success() is None
    assert "test_mean_steps" not in evaluation.metrics()


def test_unknown_tasks_and_no_episodes_are_user_errors():
    suite = scene.SyntheticReachSuite(num_tasks=2, image_size=16)
    with pytest.raises(LbmError, match="unknown task.*reach_red, reach_green"):
        run_episodes(suite, ScriptedExpert(), episodes=2, tasks=["reach_purple"])
    with pytest.raises(LbmError, match="episodes must be >= 1"):
        run_episodes(suite, ScriptedExpert(), episodes=0)


def live_in_egl(context) -> bool:
    """Whether EGL still holds `context` (it answers EGL_BAD_CONTEXT for one that was destroyed)."""
    from mujoco import egl
    from OpenGL import error

    try:
        return bool(egl.EGL.eglQueryContext(egl.EGL_DISPLAY, context, egl.EGL.EGL_CONFIG_ID, ctypes.c_long()))
    except error.Error:
        return False


def gl_contexts(env) -> list:
    """The EGL contexts of a Meta-World environment's renderers (one, once it has rendered)."""
    return [viewer.opengl_context._context for viewer in env._env.mujoco_renderer._viewers.values()]


class HoldingOnToEnvironments:
    """Holds still in Meta-World and keeps the environments it acts in, as anything holding one (a video
    writer, a user's actor) would, so their renderers stay open unless the rollout closes them; raises at
    call `fail_at` when given."""

    n_obs_steps = 1

    def __init__(self, fail_at: int | None = None):
        self.envs, self.calls, self.fail_at = [], 0, fail_at

    def __call__(self, obs, instructions, envs):
        self.envs.extend(env for env in envs if all(env is not kept for kept in self.envs))
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("the actor failed")
        return np.zeros((len(envs), 4, 4))


@pytest.mark.parametrize("fail_at", [None, 2])
def test_every_environment_made_is_closed_at_the_end_also_when_the_run_fails(fail_at):
    from lbm.envs.meta_world import MetaWorldSuite

    if os.environ.get("MUJOCO_GL", "egl") != "egl":
        pytest.skip("checks EGL contexts; MUJOCO_GL selects another backend")
    suite = MetaWorldSuite(["reach-v3", "push-v3"], image_size=16, max_steps=12)
    actor = HoldingOnToEnvironments(fail_at)
    if fail_at is None:
        run_episodes(suite, actor, episodes=3)
    else:
        with pytest.raises(RuntimeError, match="the actor failed"):
            run_episodes(suite, actor, episodes=3)
    contexts = [context for env in actor.envs for context in gl_contexts(env)]
    assert len(actor.envs) == len(contexts) == 3
    assert [live_in_egl(context) for context in contexts] == [False] * 3

    # The check tells an open renderer from a closed one: a rendered environment's context is live.
    env = suite.make("reach-v3")
    env.reset(0)
    assert [live_in_egl(context) for context in gl_contexts(env)] == [True]
    env.close()
