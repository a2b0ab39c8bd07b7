from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import zarr

from diffusion_policy_buffer import save_as_zip, write_diffusion_policy_buffer
from lbm.errors import LbmError
from lbm.train.data.replay_buffer import (
    COMPLETION_ATTR,
    ChunkCache,
    MissingReplayBuffer,
    ReplayBuffer,
    ReplayBufferWriter,
)


def make_episodes(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n):
        t = int(rng.integers(3, 12))
        episodes.append(
            {
                "image": rng.integers(0, 255, size=(t, 8, 6, 3), dtype=np.uint8),
                "state": rng.normal(size=(t, 3)).astype(np.float32),
                "zeros": np.zeros((t, 2), dtype=np.float32),
            }
        )
    return episodes


def write(url: str, episodes: list[dict[str, np.ndarray]], **kwargs) -> None:
    with ReplayBufferWriter(url, **kwargs) as writer:
        for i, episode in enumerate(episodes):
            writer.add_episode(episode, task=f"task_{i % 2}", instruction=f"do thing {i % 2}")


def test_round_trip_keeps_every_array_episode_and_label(tmp_path):
    episodes = make_episodes(7)
    url = str(tmp_path / "rb.zarr")
    write(url, episodes, chunk_steps=4, low_dim_chunk_steps=5)

    buffer = ReplayBuffer.open(url)
    lengths = [len(e["image"]) for e in episodes]
    assert buffer.n_episodes == 7
    assert buffer.n_steps == sum(lengths)
    np.testing.assert_array_equal(buffer.episode_ends, np.cumsum(lengths))
    assert buffer.episode_ends.dtype == np.int64
    assert buffer.episode_tasks == [f"task_{i % 2}" for i in range(7)]
    assert buffer.episode_instructions == [f"do thing {i % 2}" for i in range(7)]
    assert buffer.keys() == ["image", "state", "zeros"]
    assert buffer["image"].chunks == (4, 8, 6, 3)
    assert buffer["state"].chunks == (5, 3)
    for i, episode in enumerate(episodes):
        for key, value in episode.items():
            np.testing.assert_array_equal(buffer[key][buffer.episode_slice(i)], value)


def test_read_steps_matches_zarr_in_any_order_with_repeats(tmp_path):
    episodes = make_episodes(5, seed=1)
    url = str(tmp_path / "rb.zarr")
    write(url, episodes, chunk_steps=3, low_dim_chunk_steps=4)
    buffer = ReplayBuffer.open(url, cache_bytes=10_000)
    steps = np.random.default_rng(2).integers(0, buffer.n_steps, size=40)
    steps[:3] = [buffer.n_steps - 1, 0, buffer.n_steps - 1]
    for key in buffer:
        np.testing.assert_array_equal(buffer.read_steps(key, steps), buffer[key].oindex[steps])
        # a second read comes (at least partly) from the cache and must agree
        np.testing.assert_array_equal(buffer.read_steps(key, steps), buffer[key].oindex[steps])
    assert buffer.cache.nbytes <= 10_000


def test_iter_chunks_covers_every_step_once(tmp_path):
    episodes = make_episodes(4, seed=3)
    url = str(tmp_path / "rb.zarr")
    write(url, episodes, chunk_steps=3, low_dim_chunk_steps=4)
    buffer = ReplayBuffer.open(url)
    firsts, parts = zip(*buffer.iter_chunks("state"), strict=True)
    assert list(firsts) == list(range(0, buffer.n_steps, 4))
    np.testing.assert_array_equal(np.concatenate(parts), buffer["state"][:])


def test_layout_is_the_diffusion_policy_replay_buffer_in_zarr_format_2(tmp_path):
    url = str(tmp_path / "rb.zarr")
    write(url, make_episodes(3))
    group = zarr.open_group(url, mode="r")
    assert group.metadata.zarr_format == 2
    assert sorted(group["data"].array_keys()) == ["image", "state", "zeros"]
    assert sorted(group["meta"].array_keys()) == ["episode_ends", "episode_instruction", "episode_task"]


def test_chunk_cache_stays_within_its_byte_budget():
    cache = ChunkCache(max_bytes=1000)
    for i in range(20):
        cache.put(("k", i), np.zeros(300, dtype=np.uint8))
    assert cache.nbytes == 900 and len(cache) == 3
    assert cache.get(("k", 19)) is not None and cache.get(("k", 0)) is None
    cache.put(("k", 99), np.zeros(2000, dtype=np.uint8))
    assert cache.get(("k", 99)) is None


def test_open_missing_path_says_what_makes_one(tmp_path):
    url = str(tmp_path / "nothing.zarr")
    with pytest.raises(
        MissingReplayBuffer,
        match=rf"^no replay buffer at {url}: check the path \(`lbm data synth` and `lbm data metaworld`",
    ):
        ReplayBuffer.open(url)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_diffusion_policy_buffer_is_read_unchanged(tmp_path, zarr_format):
    episodes = make_episodes(5, seed=7)
    url = write_diffusion_policy_buffer(tmp_path / "dp.zarr", episodes, zarr_format)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "dp.zarr").rglob("*")}
    buffer = ReplayBuffer.open(url)
    assert buffer.episode_tasks is None and buffer.episode_instructions is None
    np.testing.assert_array_equal(buffer.episode_ends, np.cumsum([len(e["state"]) for e in episodes]))
    steps = np.random.default_rng(0).integers(0, buffer.n_steps, size=40)
    for key in ["image", "state", "zeros"]:
        stored = np.concatenate([e[key] for e in episodes])
        np.testing.assert_array_equal(buffer.read_steps(key, steps), stored[steps])
        np.testing.assert_array_equal(np.concatenate([rows for _, rows in buffer.iter_chunks(key)]), stored)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "dp.zarr").rglob("*")} == before


def test_a_zipped_diffusion_policy_buffer_is_read_like_the_directory(tmp_path):
    episodes = make_episodes(5, seed=8)
    write_diffusion_policy_buffer(tmp_path / "dp.zarr", episodes, zarr_format=2)
    buffer = ReplayBuffer.open(save_as_zip(tmp_path / "dp.zarr", tmp_path / "dp.zarr.zip"))
    assert buffer.keys() == ["image", "state", "zeros"] and buffer.episode_tasks is None
    np.testing.assert_array_equal(buffer.episode_ends, np.cumsum([len(e["state"]) for e in episodes]))
    steps = np.random.default_rng(1).integers(0, buffer.n_steps, size=40)
    for key in buffer:
        stored = np.concatenate([e[key] for e in episodes])
        np.testing.assert_array_equal(buffer.read_steps(key, steps), stored[steps])
        np.testing.assert_array_equal(np.concatenate([rows for _, rows in buffer.iter_chunks(key)]), stored)


def test_zips_that_cannot_be_read_say_why(tmp_path):
    missing = str(tmp_path / "missing.zarr.zip")
    with pytest.raises(LbmError, match=f"^no replay buffer at {missing}: check the path"):
        ReplayBuffer.open(missing)
    (tmp_path / "text.zarr.zip").write_text("not a zip")
    with pytest.raises(LbmError, match="text.zarr.zip is not a zip file of a zarr store"):
        ReplayBuffer.open(str(tmp_path / "text.zarr.zip"))
    with zipfile.ZipFile(tmp_path / "folder.zarr.zip", "w") as archive:
        archive.writestr("dp.zarr/.zgroup", '{"zarr_format": 2}')
    with pytest.raises(
        LbmError, match="folder.zarr.zip holds no zarr store at its root; zip a store's contents"
    ):
        ReplayBuffer.open(str(tmp_path / "folder.zarr.zip"))
    with pytest.raises(LbmError, match="zarr reads zip stores from local files only: copy it"):
        ReplayBuffer.open("s3://bucket/pusht.zarr.zip")
    with pytest.raises(LbmError, match="names a zip file; lbm writes replay buffers as directories"):
        ReplayBufferWriter(str(tmp_path / "new.zarr.zip"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.zarr.zip", "text.zarr.zip"]


def test_a_group_without_data_and_episode_ends_is_not_a_replay_buffer(tmp_path):
    url = str(tmp_path / "other.zarr")
    zarr.open_group(url, mode="w", zarr_format=2).create_group("data")
    with pytest.raises(
        LbmError, match="not a replay buffer: it needs a data/ group of arrays and meta/episode_ends"
    ):
        ReplayBuffer.open(url)


def test_a_buffer_marked_incomplete_is_refused(tmp_path):
    url = write_diffusion_policy_buffer(tmp_path / "rb.zarr", make_episodes(2), zarr_format=2)
    group = zarr.open_group(url, mode="r+")
    group.attrs[COMPLETION_ATTR] = {"version": 1, "complete": False}
    with pytest.raises(LbmError, match="not a complete lbm replay buffer"):
        ReplayBuffer.open(url)


def test_killed_writer_leaves_nothing_at_the_path(tmp_path):
    url = tmp_path / "rb.zarr"
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from lbm.train.data.replay_buffer import ReplayBufferWriter
        writer = ReplayBufferWriter({str(url)!r}, chunk_steps=2)
        for _ in range(3):
            writer.add_episode({{"x": np.ones((5, 4), np.float32)}}, task="t", instruction="i")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode != 0
    assert not url.exists()
    with pytest.raises(LbmError, match="no replay buffer"):
        ReplayBuffer.open(str(url))


def test_failed_write_in_with_block_is_removed(tmp_path):
    url = tmp_path / "rb.zarr"
    with pytest.raises(ZeroDivisionError), ReplayBufferWriter(str(url)) as writer:
        writer.add_episode({"x": np.ones((5, 4), np.float32)}, task="t", instruction="i")
        1 / 0  # noqa: B018
    assert list(tmp_path.iterdir()) == []


def test_existing_dataset_is_kept_unless_overwrite(tmp_path):
    url = str(tmp_path / "rb.zarr")
    write(url, make_episodes(2, seed=0))
    with pytest.raises(LbmError, match="already exists"):
        ReplayBufferWriter(url)
    assert ReplayBuffer.open(url).n_episodes == 2

    write(url, make_episodes(5, seed=1), overwrite=True)
    assert ReplayBuffer.open(url).n_episodes == 5
    assert [p.name for p in tmp_path.iterdir()] == ["rb.zarr"]


def test_a_writer_that_finishes_second_keeps_the_first_dataset(tmp_path):
    url = str(tmp_path / "rb.zarr")
    slow = ReplayBufferWriter(url)
    slow.add_episode({"x": np.zeros((5, 4), np.float32)}, task="slow", instruction="")
    write(url, make_episodes(2))
    with pytest.raises(LbmError, match="created by another writer while this one was writing"):
        slow.close()
    assert ReplayBuffer.open(url).episode_tasks == ["task_0", "task_1"]
    assert [p.name for p in tmp_path.iterdir()] == ["rb.zarr"]


def test_inconsistent_episodes_are_user_errors(tmp_path):
    writer = ReplayBufferWriter(str(tmp_path / "rb.zarr"))
    writer.add_episode(
        {"x": np.ones((5, 4), np.float32), "y": np.ones((5,), np.int64)}, task="t", instruction="i"
    )
    with pytest.raises(LbmError, match="equal, non-zero length"):
        writer.add_episode(
            {"x": np.ones((5, 4), np.float32), "y": np.ones((4,), np.int64)}, task="t", instruction=""
        )
    with pytest.raises(LbmError, match="differ from the first episode"):
        writer.add_episode({"x": np.ones((5, 4), np.float32)}, task="t", instruction="i")
    with pytest.raises(LbmError, match=r"per step, the first episode's was float32 \(4,\)"):
        writer.add_episode(
            {"x": np.ones((5, 3), np.float32), "y": np.ones((5,), np.int64)}, task="t", instruction=""
        )
    writer.abort()


def test_s3_round_trip_and_incomplete_remote_buffer(s3_bucket):
    bucket, options = s3_bucket
    episodes = make_episodes(4, seed=5)
    url = f"{bucket}/rb.zarr"
    write(url, episodes, chunk_steps=3, storage_options=options)
    buffer = ReplayBuffer.open(url, options)
    steps = np.arange(buffer.n_steps)[::-1]
    np.testing.assert_array_equal(
        buffer.read_steps("image", steps), np.concatenate([e["image"] for e in episodes])[steps]
    )
    with pytest.raises(LbmError, match="already exists"):
        ReplayBufferWriter(url, storage_options=options)

    partial = ReplayBufferWriter(f"{bucket}/partial.zarr", storage_options=options)
    partial.add_episode(episodes[0], task="t", instruction="i")
    with pytest.raises(LbmError, match="not a complete lbm replay buffer"):
        ReplayBuffer.open(f"{bucket}/partial.zarr", options)
    partial.close()
    assert ReplayBuffer.open(f"{bucket}/partial.zarr", options).n_episodes == 1
