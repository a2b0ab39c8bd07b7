"""Meta-World as an environment suite: seeded configurations, its scripted experts, images, bad options."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lbm.envs.actors import ConstantAction, ScriptedExpert
from lbm.envs.meta_world import MT10, MetaWorldSuite, instruction
from lbm.envs.rollout import run_episodes
from lbm.errors import LbmError


def test_a_seed_is_one_configuration_and_the_goal_is_in_the_state():
    env = MetaWorldSuite(["reach-v3"]).make("reach-v3")
    first, again, other = env.reset(3)["state"], env.reset(3)["state"], env.reset(4)["state"]
    assert first.shape == (39,) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[36:39], other[36:39]), "another seed, another goal"
    assert np.abs(first[36:39]).sum() > 0, "the goal is observed"
    env.close()


def test_the_scripted_expert_succeeds_where_holding_still_does_not():
    suite = MetaWorldSuite(["reach-v3", "drawer-close-v3"], max_steps=150)
    expert = run_episodes(suite, ScriptedExpert(), episodes=4, start_seed=10)
    # No displacement and no gripper effort keep the arm where it starts.
    still = run_episodes(suite, ConstantAction(np.zeros(4)), episodes=4, start_seed=10)
    assert expert.success_rate == 1.0
    assert all(0 < r.steps < 150 for r in expert.episodes)
    assert still.success_rate == 0.0
    assert all(r.steps == 150 for r in still.episodes)


def test_the_last_steps_info_is_meta_worlds_distance_to_the_goal_and_success():
    env = MetaWorldSuite(["reach-v3"]).make("reach-v3")
    env.reset(0)
    distances, success = [], False
    while not success:
        obs, success = env.step(env.expert_action())
        distances.append(env.info["obj_to_target"])
        # Reach measures from the centre of the fingers to the goal that the state shows.
        fingers = env._env.tcp_center
        np.testing.assert_allclose(distances[-1], np.linalg.norm(fingers - obs["state"][36:39]), atol=1e-5)
        assert env.info["success"] == success
    assert distances[-1] <= 0.05 < distances[-2]
    env.close()


def test_images_come_from_the_camera_right_side_up_and_follow_the_arm():
    env = MetaWorldSuite(["reach-v3"], image_size=32).make("reach-v3")
    first = env.reset(0)
    assert first["image"].shape == (32, 32, 3) and first["image"].dtype == np.uint8
    for _ in range(15):
        obs, _ = env.step(np.array([1.0, 0.0, 0.0, 0.0]))
    assert np.abs(obs["image"].astype(int) - first["image"].astype(int)).mean() > 1
    # The table top fills the lower part of a corner camera's view, the room the upper part.
    frame = env.render().astype(float)
    assert frame.shape == (32, 32, 3)
    assert frame[:8].std() < frame[16:].std()
    env.close()


def test_instructions_come_from_task_names():
    assert instruction("drawer-open-v3") == "drawer open"
    assert instruction("button-press-topdown-v3") == "button press topdown"
    assert MetaWorldSuite("mt10").tasks == list(MT10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tasks": "mt11"}, "unknown Meta-World task.s. mt11: give mt10 or task names"),
        ({"tasks": ["reach-v3", "fly-v3"]}, r"unknown Meta-World task\(s\) fly-v3"),
        ({"tasks": []}, r"\(none given\)"),
        ({"tasks": "mt10", "image_size": 4}, "image_size must be at least 8"),
        ({"tasks": "mt10", "max_steps": 0}, "max_steps must be >= 1"),
    ],
)
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(LbmError, match=message):
        MetaWorldSuite(**options)


def test_unknown_task_or_camera_is_refused():
    suite = MetaWorldSuite(["reach-v3"], camera="sky")
    with pytest.raises(LbmError, match="the environment has reach-v3"):
        suite.make("push-v3")
    with pytest.raises(LbmError, match="unknown Meta-World camera 'sky'"):
        suite.make("reach-v3")


def test_a_process_that_renders_first_can_import_the_policy_after():
    # Mesa's software renderer and triton (which diffusers imports) each bring an LLVM; in this order the
    # process crashed until the environment imported triton before its first frame.
    script = (
        "from lbm.envs.meta_world import MetaWorldSuite\n"
        "env = MetaWorldSuite(['reach-v3'], image_size=16).make('reach-v3')\n"
        "env.reset(0)\n"
        "env.render()\n"
        "import lbm.train.policy\n"
        "print('imported')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("imported")
