"""The synthetic scene as an environment: the rules its datasets were written with, seeded episodes, and
what the baselines a skeptic tries first achieve in it."""

from __future__ import annotations

import numpy as np
import pytest

from lbm.envs import synthetic_reach as scene
from lbm.envs.actors import ConstantAction, HoldStill, RandomAction, ScriptedExpert
from lbm.envs.rollout import run_episodes
from lbm.errors import LbmError
from lbm.train.data.synthetic import scripted_episode


def agent_centroid(image: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero((image == scene.AGENT_RGB).all(axis=-1))
    return (np.array([cols.mean(), rows.mean()]) + 0.5) / image.shape[0]


def test_dataset_episodes_follow_the_environment_rules():
    episode = scripted_episode(np.random.default_rng([0, 3]), num_tasks=4, task_index=3, image_size=32)
    goal = episode.goals[3]
    for t in range(len(episode.action) - 1):
        np.testing.assert_allclose(
            scene.move(episode.agent_pos[t].astype(np.float64), episode.action[t]),
            episode.agent_pos[t + 1],
            atol=1e-6,
        )
    reached_at = next(t for t, pos in enumerate(episode.agent_pos) if scene.reached(pos, goal))
    assert 0 < reached_at < len(episode.agent_pos)
    assert not any(scene.reached(pos, goal) for pos in episode.agent_pos[:reached_at])


def test_reset_is_seeded_and_step_moves_at_most_max_reach_towards_the_action():
    env = scene.SyntheticReachSuite(num_tasks=3, image_size=48).make("reach_blue")
    first = env.reset(seed=5)
    again = env.reset(seed=5)
    other = env.reset(seed=6)
    np.testing.assert_array_equal(first["image"], again["image"])
    assert not np.array_equal(first["image"], other["image"])
    start = env.reset(seed=5)["agent_pos"].astype(np.float64)
    far = np.clip(start + np.array([0.5, 0.5]), 0, 1)
    obs, success = env.step(far)
    assert not success
    assert np.linalg.norm(obs["agent_pos"] - start) == pytest.approx(scene.MAX_REACH, rel=1e-5)
    np.testing.assert_allclose(agent_centroid(obs["image"]), obs["agent_pos"], atol=1 / 48)
    assert obs["image"].shape == (48, 48, 3) and obs["image"].dtype == np.uint8
    obs, _ = env.step(np.array([2.0, -1.0]))  # outside the arena: the agent stays inside
    assert obs["agent_pos"].min() >= 0 and obs["agent_pos"].max() <= 1


def test_scripted_expert_succeeds_and_trivial_baselines_do_not():
    suite = scene.SyntheticReachSuite(num_tasks=4, image_size=32)
    expert = run_episodes(suite, ScriptedExpert(), episodes=20, start_seed=100)
    assert expert.success_rate == 1.0
    assert expert.tasks == ["reach_red", "reach_green", "reach_blue", "reach_yellow"]
    # Starts are 0.52-0.9 away, the expert moves at most MAX_SPEED (plus noise) per step.
    assert 0.5 / scene.MAX_SPEED < expert.mean_steps_to_success() < 0.9 / scene.MAX_SPEED + 10
    hold = run_episodes(suite, HoldStill(), episodes=20, start_seed=100)
    assert hold.success_rate == 0.0 and all(e.steps == scene.MAX_STEPS for e in hold.episodes)
    centre = run_episodes(suite, ConstantAction(np.array([0.5, 0.5])), episodes=20, start_seed=100)
    random = run_episodes(suite, RandomAction(np.zeros(2), np.ones(2), seed=0), episodes=20, start_seed=100)
    assert centre.success_rate <= 0.25 and random.success_rate <= 0.25


def test_unknown_task_and_bad_options_are_user_errors():
    with pytest.raises(LbmError, match="reach_red, reach_green"):
        scene.SyntheticReachSuite(num_tasks=2, image_size=32).make("reach_blue")
    with pytest.raises(LbmError, match="between 1 and 8"):
        scene.SyntheticReachSuite(num_tasks=9)
    with pytest.raises(LbmError, match=">= 16"):
        scene.SyntheticReachSuite(image_size=8)
