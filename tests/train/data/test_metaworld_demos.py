"""`lbm data metaworld`: the scripted experts' successful episodes, recorded to a few steps after their
first success, as a replay buffer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lbm.envs.meta_world import MetaWorldEnv
from lbm.train.data.replay_buffer import ReplayBuffer


def lbm_data(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lbm.cli.main", "data", "metaworld", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_demonstrations_replay_to_success_and_go_on_for_the_steps_asked_after_it(tmp_path):
    out = tmp_path / "mw.zarr"
    done = lbm_data(
        "--out", str(out), "--tasks", "reach-v3", "--episodes-per-task", "2", "--image-size", "16",
        "--steps-after-success", "5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"wrote 2 episodes (1 tasks) to {out}"
    assert lines[2].split()[:3] == ["reach-v3", "2/2", "succeeded"]
    buffer = ReplayBuffer.open(str(out))
    assert buffer.episode_tasks == ["reach-v3", "reach-v3"]
    assert buffer.episode_instructions == ["reach", "reach"]
    assert buffer["state"].shape[1:] == (39,) and buffer["action"].shape[1:] == (4,)
    assert buffer["image"].shape[1:] == (16, 16, 3)
    actions = buffer["action"][:]
    assert np.abs(actions).max() <= 1
    # Episode k is the expert's from seed k (it succeeds on both): the same actions in a fresh environment
    # from that seed pass through the stored states and first succeed 5 steps before the last one, at the
    # step count the command reports.
    env = MetaWorldEnv("reach-v3")
    to_success = []
    for k in range(2):
        steps = buffer.episode_slice(k)
        states = buffer["state"][steps]
        np.testing.assert_allclose(env.reset(k)["state"], states[0], atol=1e-6)
        successes = []
        for t, action in enumerate(actions[steps]):
            obs, success = env.step(action)
            successes.append(success)
            if t + 1 < len(states):
                np.testing.assert_allclose(obs["state"], states[t + 1], atol=1e-5)
        first = successes.index(True)
        assert first == len(states) - 6
        to_success.append(first + 1)
    env.close()
    assert f"{np.mean(to_success):.0f} steps to success on average" in lines[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "mt11"], "unknown Meta-World task(s) mt11"),
        (["--episodes-per-task", "0"], "episodes per task must be >= 1, got 0"),
        (["--steps-after-success", "-1"], "steps after success must be >= 0, got -1"),
        (["--image-size", "4"], "image size must be at least 8 pixels, got 4"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "mw.zarr"
    done = lbm_data("--out", str(out), "--tasks", "reach-v3", *args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert list(tmp_path.iterdir()) == []
