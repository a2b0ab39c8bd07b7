"""Training sequences from replay buffers that diffusion_policy's ReplayBuffer wrote: keys mapped to
shape_meta, tasks and instructions from the config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from diffusion_policy_buffer import push_t_like_episodes, save_as_zip, write_diffusion_policy_buffer
from lbm.errors import LbmError
from lbm.train.data.replay_buffer import ReplayBufferWriter
from lbm.train.data.sequence_dataset import MultitaskSequenceDataset

torch.set_num_threads(1)

SHAPE_META = {
    "obs": {"image": {"shape": [3, 24, 24], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
    "action": {"shape": [2]},
}
KEY_MAP = {"image": "img", "agent_pos": "state[0:2]"}
TASKS = [
    {"task": "reach_red", "instruction": "reach the red square", "episodes": [0, 3]},
    {"task": "reach_green", "instruction": "reach the green circle", "episodes": [3, 6]},
]
SEQUENCE = {"shape_meta": SHAPE_META, "horizon": 8, "n_obs_steps": 2, "n_action_steps": 4, "val_ratio": 0.3}


@pytest.fixture(scope="module")
def episodes() -> list[dict]:
    return push_t_like_episodes(num_tasks=2, episodes_per_task=3, image_size=24, seed=1)


def write_lbm_buffer(path, episodes: list[dict]) -> str:
    """The same episodes in our own layout, under shape_meta's keys, labelled as TASKS labels them."""
    with ReplayBufferWriter(str(path), chunk_steps=3) as writer:
        for i, episode in enumerate(episodes):
            entry = next(t for t in TASKS if t["episodes"][0] <= i < t["episodes"][1])
            writer.add_episode(
                {
                    "image": episode["img"].astype(np.uint8),
                    "agent_pos": episode["state"][:, :2],
                    "action": episode["action"],
                },
                task=entry["task"],
                instruction=entry["instruction"],
            )
    return str(path)


def assert_same_samples(a: MultitaskSequenceDataset, b: MultitaskSequenceDataset) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a.__getitems__(list(range(len(a)))), b.__getitems__(list(range(len(b)))), strict=True):
        assert x["instruction"] == y["instruction"]
        torch.testing.assert_close(x["action"], y["action"])
        for key in SHAPE_META["obs"]:
            torch.testing.assert_close(x["obs"][key], y["obs"][key])


def assert_same_datasets(a: MultitaskSequenceDataset, b: MultitaskSequenceDataset) -> None:
    """The same instructions, split, normalizer statistics and samples of both splits."""
    assert a.instructions == b.instructions
    np.testing.assert_array_equal(a.episodes, b.episodes)
    for key, stats in b.normalizer_stats().items():
        for name, value in stats.items():
            np.testing.assert_array_equal(a.normalizer_stats()[key][name], value)
    assert_same_samples(a, b)
    assert_same_samples(a.get_validation_dataset(), b.get_validation_dataset())


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_mapped_buffer_gives_the_samples_of_the_same_data_in_our_layout(tmp_path, episodes, zarr_format):
    theirs = write_diffusion_policy_buffer(tmp_path / "theirs.zarr", episodes, zarr_format)
    ours = write_lbm_buffer(tmp_path / "ours.zarr", episodes)
    mapped = MultitaskSequenceDataset(theirs, **SEQUENCE, key_map=KEY_MAP, episode_tasks=TASKS)
    reference = MultitaskSequenceDataset(ours, **SEQUENCE)
    assert mapped.instructions == ["reach the green circle", "reach the red square"]
    assert_same_datasets(mapped, reference)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_zipped_buffer_gives_the_samples_of_the_same_buffer_in_a_directory(tmp_path, episodes, zarr_format):
    directory = write_diffusion_policy_buffer(tmp_path / "theirs.zarr", episodes, zarr_format)
    zipped = save_as_zip(tmp_path / "theirs.zarr", tmp_path / "theirs.zarr.zip")
    before = (tmp_path / "theirs.zarr.zip").read_bytes()
    mapping = {"key_map": KEY_MAP, "episode_tasks": TASKS}
    from_zip = MultitaskSequenceDataset(zipped, **SEQUENCE, **mapping)
    from_directory = MultitaskSequenceDataset(directory, **SEQUENCE, **mapping)
    assert_same_datasets(from_zip, from_directory)
    assert (tmp_path / "theirs.zarr.zip").read_bytes() == before, "read unchanged"


def test_loader_workers_read_a_zipped_buffer_through_their_own_handles(tmp_path, episodes):
    write_diffusion_policy_buffer(tmp_path / "theirs.zarr", episodes, zarr_format=2)
    zipped = save_as_zip(tmp_path / "theirs.zarr", tmp_path / "theirs.zarr.zip")
    # No cache: every batch reads its chunks from the zip, the workers at the same time.
    dataset = MultitaskSequenceDataset(
        zipped, **SEQUENCE, key_map=KEY_MAP, episode_tasks=TASKS, cache_bytes=0
    )
    dataset.__getitems__([0])  # the parent's handles are open (and at some file offset) when workers fork
    order = np.random.default_rng(0).permutation(len(dataset)).tolist()

    def batches(**options) -> list[dict]:
        return list(DataLoader(dataset, batch_size=5, sampler=order, **options))

    expected, actual = batches(num_workers=0), batches(num_workers=2, multiprocessing_context="fork")
    assert len(actual) == len(expected)
    for a, b in zip(expected, actual, strict=True):
        torch.testing.assert_close(a["action"], b["action"])
        torch.testing.assert_close(a["obs"]["image"], b["obs"]["image"])


def test_one_task_for_every_episode(tmp_path, episodes):
    theirs = write_diffusion_policy_buffer(tmp_path / "theirs.zarr", episodes, zarr_format=2)
    one = [{"task": "push_t", "instruction": "push the T-shaped block onto the target"}]
    dataset = MultitaskSequenceDataset(theirs, **SEQUENCE, key_map=KEY_MAP, episode_tasks=one)
    assert dataset.instructions == ["push the T-shaped block onto the target"]
    assert {sample["instruction"] for sample in dataset.__getitems__(list(range(len(dataset))))} == {
        "push the T-shaped block onto the target"
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key_map": KEY_MAP}, r"stores no task or instruction per episode .*task\.dataset\.episode_tasks"),
        (
            {"key_map": KEY_MAP, "episode_tasks": TASKS[:1]},
            r"names no task for 3 of the 6 episodes .* \(the first is episode 3\)",
        ),
        (
            {"key_map": KEY_MAP, "episode_tasks": [TASKS[0], {**TASKS[1], "episodes": [2, 6]}]},
            "gives episode 2 .* two tasks",
        ),
        (
            {"key_map": KEY_MAP, "episode_tasks": [{**TASKS[0], "episodes": [0, 7]}]},
            r"range \[0, 7\) .* not within the 6 episodes",
        ),
        ({"episode_tasks": TASKS}, r"names 'image', which .* lacks; it has action, img, state .*key_map"),
        (
            {"key_map": {**KEY_MAP, "wrist": "img"}, "episode_tasks": TASKS},
            "maps wrist, which shape_meta lacks",
        ),
        (
            {"key_map": {**KEY_MAP, "agent_pos": "state[0:3]"}, "episode_tasks": TASKS},
            r"'agent_pos' \(data/state\[:3\]\) is stored with shape \[3\] but shape_meta says \[2\]",
        ),
        ({"key_map": {**KEY_MAP, "agent_pos": "state[0]"}, "episode_tasks": TASKS}, "write KEY or KEY"),
    ],
)
def test_bad_mappings_are_user_errors(tmp_path, episodes, options, message):
    theirs = write_diffusion_policy_buffer(tmp_path / "theirs.zarr", episodes, zarr_format=2)
    with pytest.raises(LbmError, match=message):
        MultitaskSequenceDataset(theirs, **SEQUENCE, **options)


def test_episode_tasks_for_a_buffer_with_its_own_are_refused(tmp_path, episodes):
    ours = write_lbm_buffer(tmp_path / "ours.zarr", episodes)
    with pytest.raises(LbmError, match="stores a task and instruction per episode; remove"):
        MultitaskSequenceDataset(ours, **SEQUENCE, episode_tasks=TASKS)
