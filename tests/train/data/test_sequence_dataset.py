from __future__ import annotations

import pickle
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lbm.errors import LbmError
from lbm.train.data.replay_buffer import ReplayBuffer, ReplayBufferWriter
from lbm.train.data.sequence_dataset import MultitaskSequenceDataset
from lbm.train.data.synthetic import write_synthetic_dataset
from lbm.train.normalizer import LinearNormalizer

torch.set_num_threads(1)

INDEXED_META = {
    "obs": {"image": {"shape": [3, 20, 20], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
    "action": {"shape": [2]},
}


def write_indexed(path: Path, lengths: list[int], tasks: list[str]) -> str:
    """A buffer whose step s has image value s + 1, agent_pos (s, 10 s) and action (s, -s)."""
    with ReplayBufferWriter(str(path), chunk_steps=3, low_dim_chunk_steps=4) as writer:
        first = 0
        for length, task in zip(lengths, tasks, strict=True):
            steps = np.arange(first, first + length)
            writer.add_episode(
                {
                    "image": np.broadcast_to(
                        (steps + 1).astype(np.uint8)[:, None, None, None], (length, 20, 20, 3)
                    ),
                    "agent_pos": np.stack([steps, 10 * steps], axis=1).astype(np.float32),
                    "action": np.stack([steps, -steps], axis=1).astype(np.float32),
                },
                task=task,
                instruction=f"do {task}",
            )
            first += length
    return str(path)


def unnormalize(x: torch.Tensor, stats: dict[str, np.ndarray]) -> np.ndarray:
    return (x.numpy() + 1) / 2 * (stats["max"] - stats["min"]) + stats["min"]


def all_samples(dataset: MultitaskSequenceDataset) -> list[dict]:
    return dataset.__getitems__(list(range(len(dataset))))


def test_samples_repeat_the_first_and_last_frame_at_episode_edges(tmp_path):
    url = write_indexed(tmp_path / "rb.zarr", [5, 3], ["a", "a"])
    dataset = MultitaskSequenceDataset(
        url, shape_meta=INDEXED_META, horizon=4, n_obs_steps=2, n_action_steps=2, val_ratio=0.0
    )
    # pad_before = n_obs_steps - 1 = 1, pad_after = n_action_steps - 1 = 1
    expected_windows = [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4], [5, 5, 6, 7], [5, 6, 7, 7]]
    assert len(dataset) == len(expected_windows)
    stats = dataset.normalizer_stats()
    for sample, window in zip(all_samples(dataset), expected_windows, strict=True):
        window = np.array(window)
        assert sample["obs"]["image"].shape == (2, 3, 20, 20) and sample["obs"]["image"].dtype == torch.uint8
        assert sample["obs"]["image"][:, 1, 4, 7].tolist() == (window[:2] + 1).tolist()
        assert (
            sample["obs"]["agent_pos"].shape == (2, 2) and sample["obs"]["agent_pos"].dtype == torch.float32
        )
        np.testing.assert_allclose(
            unnormalize(sample["obs"]["agent_pos"], stats["agent_pos"])[:, 1], 10 * window[:2]
        )
        assert sample["action"].shape == (4, 2) and sample["action"].dtype == torch.float32
        np.testing.assert_allclose(
            unnormalize(sample["action"], stats["action"]), np.stack([window, -window], 1)
        )
        assert sample["instruction"] == "do a"
    assert dataset[3]["action"].tolist() == all_samples(dataset)[3]["action"].tolist()
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_explicit_padding_changes_the_windows(tmp_path):
    url = write_indexed(tmp_path / "rb.zarr", [5], ["a"])
    dataset = MultitaskSequenceDataset(
        url, shape_meta=INDEXED_META, horizon=3, n_obs_steps=1, n_action_steps=1, pad_before=2, pad_after=0
    )
    assert [s["obs"]["image"][0, 0, 0, 0].item() - 1 for s in all_samples(dataset)] == [0, 0, 0, 1, 2]


def test_split_is_by_episode_per_task_disjoint_and_seeded(tmp_path):
    tasks = ["a"] * 10 + ["b"] * 6 + ["c"] * 2
    url = write_indexed(tmp_path / "rb.zarr", [6] * len(tasks), tasks)
    common = {
        "shape_meta": INDEXED_META,
        "horizon": 4,
        "n_obs_steps": 2,
        "n_action_steps": 2,
        "val_ratio": 0.2,
    }
    train = MultitaskSequenceDataset(url, **common, seed=1)
    val = train.get_validation_dataset()
    assert val.split == "val" and train.split == "train"
    assert set(train.episodes).isdisjoint(val.episodes)
    assert sorted([*train.episodes, *val.episodes]) == list(range(len(tasks)))
    assert [tasks[i] for i in val.episodes].count("a") == 2
    assert [tasks[i] for i in val.episodes].count("b") == 1
    assert [tasks[i] for i in val.episodes].count("c") == 1

    again = MultitaskSequenceDataset(url, **common, seed=1, split="val")
    assert again.episodes.tolist() == val.episodes.tolist()
    assert (
        MultitaskSequenceDataset(url, **common, seed=2, split="val").episodes.tolist()
        != val.episodes.tolist()
    )
    # an episode's split does not depend on which tasks are kept
    only_b = MultitaskSequenceDataset(url, **common, seed=1, split="val", tasks=["b"])
    assert only_b.episodes.tolist() == [i for i in val.episodes if tasks[i] == "b"]
    # samples of a split come only from its episodes
    val_instructions = {s["instruction"] for s in all_samples(only_b)}
    assert val_instructions == {"do b"}


def test_val_gets_an_episode_when_asked_and_none_when_not(tmp_path):
    url = write_indexed(tmp_path / "rb.zarr", [6, 6], ["a", "b"])
    common = {"shape_meta": INDEXED_META, "horizon": 4, "n_obs_steps": 2, "n_action_steps": 2}
    assert len(MultitaskSequenceDataset(url, **common, val_ratio=0.01).get_validation_dataset().episodes) == 1
    no_val = MultitaskSequenceDataset(url, **common, val_ratio=0.0).get_validation_dataset()
    assert len(no_val) == 0 and len(no_val.episodes) == 0


def test_normalization_uses_train_episodes_and_maps_them_to_unit_range(small_dataset, small_shape_meta):
    dataset = MultitaskSequenceDataset(
        str(small_dataset),
        shape_meta=small_shape_meta,
        horizon=8,
        n_obs_steps=2,
        n_action_steps=4,
        val_ratio=0.3,
    )
    buffer = ReplayBuffer.open(str(small_dataset))
    stats = dataset.normalizer_stats()
    for key in ("action", "agent_pos"):
        raw = np.concatenate([buffer[key][buffer.episode_slice(i)] for i in dataset.episodes])
        np.testing.assert_array_equal(stats[key]["min"], raw.min(0))
        np.testing.assert_array_equal(stats[key]["max"], raw.max(0))
    samples = all_samples(dataset)
    actions = torch.stack([s["action"] for s in samples])
    positions = torch.stack([s["obs"]["agent_pos"] for s in samples])
    for values in (actions, positions):
        assert values.min() >= -1 - 1e-6 and values.max() <= 1 + 1e-6
    # action windows cover every step of every training episode, so both ends of the range are reached
    assert actions.amin(dim=(0, 1)).tolist() == pytest.approx([-1, -1], abs=1e-5)
    assert actions.amax(dim=(0, 1)).tolist() == pytest.approx([1, 1], abs=1e-5)

    val = dataset.get_validation_dataset()
    direct_val = MultitaskSequenceDataset(
        str(small_dataset),
        shape_meta=small_shape_meta,
        horizon=8,
        n_obs_steps=2,
        n_action_steps=4,
        val_ratio=0.3,
        split="val",
    )
    for other in (val, direct_val):
        for key, value in other.normalizer_stats().items():
            np.testing.assert_array_equal(value["min"], stats[key]["min"])
            np.testing.assert_array_equal(value["max"], stats[key]["max"])


def test_the_policy_normalizer_inverts_the_dataset_normalization(tmp_path):
    url = write_indexed(tmp_path / "rb.zarr", [7, 5], ["a", "b"])
    dataset = MultitaskSequenceDataset(
        url, shape_meta=INDEXED_META, horizon=4, n_obs_steps=2, n_action_steps=2, val_ratio=0.0
    )
    normalizer = LinearNormalizer()
    normalizer.set_stats(dataset.normalizer_stats())
    window = np.arange(4)  # sample 1 is steps 0..3 of episode 0 (sample 0 starts one padded step earlier)
    actions = normalizer.unnormalize("action", dataset[1]["action"]).numpy()
    np.testing.assert_allclose(actions, np.stack([window, -window], 1), atol=1e-5)
    positions = normalizer.unnormalize("agent_pos", dataset[1]["obs"]["agent_pos"]).numpy()
    np.testing.assert_allclose(positions, np.stack([window[:2], 10 * window[:2]], 1), atol=1e-5)


def test_constant_dimension_normalizes_to_zero(tmp_path):
    path = tmp_path / "rb.zarr"
    with ReplayBufferWriter(str(path)) as writer:
        writer.add_episode(
            {
                "image": np.zeros((6, 20, 20, 3), np.uint8),
                "agent_pos": np.ones((6, 2)),
                "action": np.ones((6, 2)),
            },
            task="a",
            instruction="",
        )
    dataset = MultitaskSequenceDataset(
        str(path), shape_meta=INDEXED_META, horizon=2, n_obs_steps=1, n_action_steps=1
    )
    assert dataset[0]["action"].abs().max().item() == 0


def test_tasks_keeps_only_those_episodes(small_dataset, small_shape_meta):
    common = {"shape_meta": small_shape_meta, "horizon": 8, "n_obs_steps": 2, "n_action_steps": 4}
    red = MultitaskSequenceDataset(str(small_dataset), **common, tasks=["reach_red"], val_ratio=0.0)
    assert {s["instruction"] for s in all_samples(red)} == {"reach the red square"}
    assert red.instructions == ["reach the red square"]
    everything = MultitaskSequenceDataset(str(small_dataset), **common)
    assert everything.instructions == [
        "reach the blue triangle",
        "reach the green circle",
        "reach the red square",
    ]
    with pytest.raises(
        LbmError, match="unknown task.*reach_pink; available: reach_blue, reach_green, reach_red"
    ):
        MultitaskSequenceDataset(str(small_dataset), **common, tasks=["reach_pink"])


def test_max_train_episodes_subsamples_train_only(small_dataset, small_shape_meta):
    common = {
        "shape_meta": small_shape_meta,
        "horizon": 8,
        "n_obs_steps": 2,
        "n_action_steps": 4,
        "val_ratio": 0.3,
    }
    full = MultitaskSequenceDataset(str(small_dataset), **common)
    few = MultitaskSequenceDataset(str(small_dataset), **common, max_train_episodes=2)
    assert len(few.episodes) == 2 and set(few.episodes) <= set(full.episodes)
    assert few.get_validation_dataset().episodes.tolist() == full.get_validation_dataset().episodes.tolist()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"obs": {"image": {"shape": [3, 32, 32], "type": "rgb"}}},
            r"stored as uint8 \[24, 24, 3\].*\[3, 32, 32\]",
        ),
        (
            {"obs": {"wrist": {"shape": [3, 24, 24], "type": "rgb"}}},
            "names 'wrist', which .* lacks; it has action",
        ),
        ({"obs": {"agent_pos": {"shape": [3], "type": "low_dim"}}}, r"stored with shape \[2\]"),
        ({"obs": {"agent_pos": {"shape": [2], "type": "depth"}}}, "use 'rgb' or 'low_dim'"),
        ({"action": {"shape": [7]}}, r"'action' is stored with shape \[2\]"),
    ],
)
def test_shape_meta_must_match_the_stored_arrays(small_dataset, change, message):
    shape_meta = {"obs": {}, "action": {"shape": [2]}, **change}
    with pytest.raises(LbmError, match=message):
        MultitaskSequenceDataset(
            str(small_dataset), shape_meta=shape_meta, horizon=8, n_obs_steps=2, n_action_steps=4
        )


def test_bad_sequence_options_are_user_errors(small_dataset, small_shape_meta):
    common = {"shape_meta": small_shape_meta, "n_action_steps": 4}
    with pytest.raises(LbmError, match="n_obs_steps <= horizon"):
        MultitaskSequenceDataset(str(small_dataset), **common, horizon=2, n_obs_steps=3)
    with pytest.raises(LbmError, match="split must be one of train, val"):
        MultitaskSequenceDataset(str(small_dataset), **common, horizon=8, n_obs_steps=2, split="test")
    with pytest.raises(LbmError, match="no replay buffer"):
        MultitaskSequenceDataset(str(small_dataset) + "-missing", **common, horizon=8, n_obs_steps=2)


def test_building_reads_no_image_chunk_and_the_cache_stays_bounded(small_dataset, small_shape_meta, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_dataset, copy)
    image_chunks = [p for p in (copy / "data" / "image").iterdir() if not p.name.startswith(".")]
    assert len(image_chunks) > 10
    for chunk in image_chunks:
        chunk.write_bytes(b"not a zstd frame")
    dataset = MultitaskSequenceDataset(
        str(copy), shape_meta=small_shape_meta, horizon=8, n_obs_steps=2, n_action_steps=4, cache_bytes=20_000
    )
    val = dataset.get_validation_dataset()
    assert len(dataset) > 0 and len(val) > 0 and dataset.normalizer_stats()["action"]["min"].shape == (2,)
    with pytest.raises(RuntimeError):
        dataset[0]

    intact = MultitaskSequenceDataset(
        str(small_dataset),
        shape_meta=small_shape_meta,
        horizon=8,
        n_obs_steps=2,
        n_action_steps=4,
        cache_bytes=20_000,
    )
    for start in range(0, len(intact), 16):
        intact.__getitems__(list(range(start, min(start + 16, len(intact)))))
        assert intact._open_buffer().cache.nbytes <= 20_000


def test_dataset_pickles_without_its_open_store(small_dataset, small_shape_meta):
    dataset = MultitaskSequenceDataset(
        str(small_dataset), shape_meta=small_shape_meta, horizon=8, n_obs_steps=2, n_action_steps=4
    )
    restored = pickle.loads(pickle.dumps(dataset))
    assert restored._buffer is None
    for a, b in zip(all_samples(dataset), all_samples(restored), strict=True):
        assert a["instruction"] == b["instruction"]
        assert torch.equal(a["obs"]["image"], b["obs"]["image"]) and torch.equal(a["action"], b["action"])


def batches(dataset: MultitaskSequenceDataset, **loader_options) -> list[dict]:
    order = np.random.default_rng(0).permutation(len(dataset)).tolist()
    return list(DataLoader(dataset, batch_size=7, sampler=order, **loader_options))


def assert_same_batches(expected: list[dict], actual: list[dict]) -> None:
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual, strict=True):
        assert a["instruction"] == b["instruction"]
        assert torch.equal(a["action"], b["action"])
        for key in a["obs"]:
            assert torch.equal(a["obs"][key], b["obs"][key])


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_dataloader_workers_give_the_same_batches(small_dataset, small_shape_meta, context):
    dataset = MultitaskSequenceDataset(
        str(small_dataset), shape_meta=small_shape_meta, horizon=8, n_obs_steps=2, n_action_steps=4
    )
    in_process = batches(dataset, num_workers=0)
    assert in_process[0]["obs"]["image"].shape == (7, 2, 3, 24, 24)
    assert len(in_process[0]["instruction"]) == 7
    workers = batches(dataset, num_workers=2, persistent_workers=True, multiprocessing_context=context)
    assert_same_batches(in_process, workers)


def test_reads_from_s3_like_from_a_local_path(s3_bucket, small_shape_meta, tmp_path):
    bucket, options = s3_bucket
    for url, storage in ((f"{bucket}/ds.zarr", options), (str(tmp_path / "ds.zarr"), None)):
        write_synthetic_dataset(
            url, num_tasks=2, episodes_per_task=2, image_size=24, seed=5, storage_options=storage
        )
    common = {"shape_meta": small_shape_meta, "horizon": 8, "n_obs_steps": 2, "n_action_steps": 4}
    remote = MultitaskSequenceDataset(f"{bucket}/ds.zarr", **common, storage_options=options)
    local = MultitaskSequenceDataset(str(tmp_path / "ds.zarr"), **common)
    assert len(remote) == len(local)
    assert_same_batches(batches(local), batches(remote, num_workers=2))


def test_a_batch_of_64_at_96_pixels_loads_well_under_100_ms(tmp_path):
    path = str(tmp_path / "ds.zarr")
    write_synthetic_dataset(path, num_tasks=2, episodes_per_task=3, image_size=96, seed=0)
    shape_meta = {
        "obs": {
            "image": {"shape": [3, 96, 96], "type": "rgb"},
            "agent_pos": {"shape": [2], "type": "low_dim"},
        },
        "action": {"shape": [2]},
    }
    # no cache: every batch decodes its chunks from storage
    dataset = MultitaskSequenceDataset(
        path, shape_meta=shape_meta, horizon=16, n_obs_steps=2, n_action_steps=8, cache_bytes=0
    )
    rng = np.random.default_rng(0)
    times = []
    for _ in range(7):
        indices = rng.integers(0, len(dataset), size=64).tolist()
        start = time.perf_counter()
        batch = dataset.__getitems__(indices)
        times.append(time.perf_counter() - start)
    assert batch[0]["obs"]["image"].shape == (2, 3, 96, 96)
    assert statistics.median(times) < 0.05, times
