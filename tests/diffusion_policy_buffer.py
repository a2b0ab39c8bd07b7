"""Replay buffers laid out as diffusion_policy's own `ReplayBuffer` writes them, for the tests that read them.

Its layout: a root group with `data/<key>` arrays grown episode by episode on axis 0 (chunks sized for about
2 MB from the first episode, Blosc lz4 by default) and `meta/episode_ends` (int64, uncompressed); no task
or instruction per episode and no lbm completion mark. `save_to_store` into a `zarr.ZipStore` (a
`*.zarr.zip`) copies every key of the store once into an uncompressed entry at the zip's root. Push-T's
images are float32 in 0..255 under `img`, its agent position the first two values of `state`.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numcodecs
import numpy as np
import zarr

from lbm.train.data.synthetic import scripted_episode

CHUNK_BYTES = 2_000_000


def write_diffusion_policy_buffer(path: Path, episodes: list[dict[str, np.ndarray]], zarr_format: int) -> str:
    """Write `episodes` ({key: [T, ...]}) as diffusion_policy's ReplayBuffer does, in zarr format 2 or 3."""
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    data = root.create_group("data")
    meta = root.create_group("meta")
    compressor = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)
    codecs = {"compressors": compressor} if zarr_format == 2 else {}
    episode_ends = meta.create_array(
        "episode_ends", shape=(0,), chunks=(1024,), dtype=np.int64, compressors=None
    )
    n_steps = 0
    for episode in episodes:
        length = len(next(iter(episode.values())))
        for key, value in episode.items():
            if key not in data:
                step_bytes = value[0].nbytes
                chunk_steps = max(1, min(length, math.ceil(CHUNK_BYTES / step_bytes)))
                data.create_array(
                    key,
                    shape=(0, *value.shape[1:]),
                    chunks=(chunk_steps, *value.shape[1:]),
                    dtype=value.dtype,
                    **codecs,
                )
            array = data[key]
            array.resize((n_steps + length, *value.shape[1:]))
            array[n_steps:] = value
        n_steps += length
        episode_ends.resize((episode_ends.shape[0] + 1,))
        episode_ends[-1] = n_steps
    return str(path)


def save_as_zip(store: Path, path: Path) -> str:
    """The directory store `store` copied into a zip file at `path`, as `zarr.ZipStore` writes one: each key
    an entry named by the key, stored uncompressed."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in sorted(p for p in store.rglob("*") if p.is_file()):
            archive.write(file, file.relative_to(store).as_posix())
    return str(path)


def push_t_like_episodes(num_tasks: int, episodes_per_task: int, image_size: int, seed: int) -> list[dict]:
    """Expert episodes of the synthetic scene under Push-T's keys: img float32 [T, S, S, 3] in 0..255,
    state float32 [T, 5] (agent x, y, then the goal's x, y and the task index), action float32 [T, 2];
    task after task, `episodes_per_task` each."""
    rng = np.random.default_rng(seed)
    episodes = []
    for task_index in range(num_tasks):
        for _ in range(episodes_per_task):
            episode = scripted_episode(rng, num_tasks=num_tasks, task_index=task_index, image_size=image_size)
            goal = np.broadcast_to(episode.goals[task_index], (len(episode.action), 2))
            index = np.full((len(episode.action), 1), task_index)
            episodes.append(
                {
                    "img": episode.image.astype(np.float32),
                    "state": np.concatenate([episode.agent_pos, goal, index], axis=1).astype(np.float32),
                    "action": episode.action,
                }
            )
    return episodes
