from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lbm.envs.synthetic_reach import BACKGROUND, GOALS, REACHED, START_DISTANCE, render_background
from lbm.errors import LbmError
from lbm.train.data.replay_buffer import ReplayBuffer
from lbm.train.data.synthetic import scripted_episode, write_synthetic_dataset


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def colour_centroid(image: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Mean (x, y) in unit coordinates of the pixels of exactly that colour."""
    rows, cols = np.nonzero((image == rgb).all(axis=-1))
    assert len(rows), f"no pixel of colour {rgb}"
    return (np.array([cols.mean(), rows.mean()]) + 0.5) / image.shape[0]


def test_same_seed_writes_the_same_bytes_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        write_synthetic_dataset(
            str(tmp_path / name), num_tasks=2, episodes_per_task=2, image_size=16, seed=seed
        )
    a, b, c = (file_bytes(tmp_path / name) for name in "abc")
    assert a == b
    buffers = [ReplayBuffer.open(str(tmp_path / name)) for name in "ac"]
    assert not np.array_equal(buffers[0]["agent_pos"][:2], buffers[1]["agent_pos"][:2])
    assert a != c


def test_expert_episodes_end_at_their_goal_in_40_to_80_steps():
    for seed in range(40):
        task = seed % 8
        episode = scripted_episode(np.random.default_rng(seed), num_tasks=8, task_index=task, image_size=32)
        assert 40 <= len(episode.agent_pos) <= 80
        assert np.linalg.norm(episode.agent_pos[-1] - episode.goals[task]) <= REACHED + 1e-6
        assert np.linalg.norm(episode.agent_pos[0] - episode.goals[task]) >= START_DISTANCE[0] - 1e-6
        # action is the next position: the agent follows its commands
        np.testing.assert_allclose(episode.action[:-1], episode.agent_pos[1:])
        assert episode.image.shape == (len(episode.agent_pos), 32, 32, 3) and episode.image.dtype == np.uint8


def test_only_the_instruction_tells_tasks_apart(small_dataset):
    buffer = ReplayBuffer.open(str(small_dataset))
    num_tasks = 3
    assert sorted(set(buffer.episode_tasks)) == sorted(g.task for g in GOALS[:num_tasks])
    for i in range(buffer.n_episodes):
        steps = buffer.episode_slice(i)
        goal = next(g for g in GOALS if g.task == buffer.episode_tasks[i])
        assert buffer.episode_instructions[i] == goal.instruction == f"reach the {goal.colour} {goal.shape}"
        first_frame = buffer["image"][steps.start]
        # every goal marker is in view, whatever the task
        for g in GOALS[:num_tasks]:
            colour_centroid(first_frame, g.rgb)
        # the episode ends on the marker its instruction names, away from the others
        final_pos = buffer["agent_pos"][steps.stop - 1]
        distances = {
            g.task: np.linalg.norm(colour_centroid(first_frame, g.rgb) - final_pos) for g in GOALS[:3]
        }
        assert min(distances, key=distances.get) == goal.task
        assert distances[goal.task] < 0.06


def test_background_draws_each_goal_in_its_colour_at_its_place():
    goals = np.array([[0.2, 0.3], [0.7, 0.8]])
    image = render_background(goals, 64)
    for goal, centre in zip(GOALS, goals, strict=False):
        np.testing.assert_allclose(colour_centroid(image, goal.rgb), centre, atol=0.03)
    assert (image[0, 0] == BACKGROUND).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_tasks": 0}, "tasks must be between 1 and 8"),
        ({"num_tasks": 9}, "tasks must be between 1 and 8"),
        ({"episodes_per_task": 0}, "episodes per task must be >= 1"),
        ({"image_size": 15}, "image size must be >= 16"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, options, message):
    with pytest.raises(LbmError, match=message):
        write_synthetic_dataset(str(tmp_path / "ds.zarr"), **options)
    assert list(tmp_path.iterdir()) == []
