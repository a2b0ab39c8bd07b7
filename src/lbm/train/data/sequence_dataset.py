"""Fixed-length training sequences from a multitask replay buffer, for diffusion policies.

A sample starts at any step of an episode, padded before and after by repeating the episode's first and
last frame (diffusion_policy's SequenceSampler). Only the first `n_obs_steps` frames of observations are
read; images stay uint8, low-dim values are min-max normalized to [-1, 1] with statistics of the training
episodes. The replay buffer is opened lazily in each process (DataLoader workers included) and read
through a bounded chunk cache.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lbm.errors import LbmError
from lbm.train.data.buffer_mapping import StoredKey, label_episodes, stored_keys
from lbm.train.data.replay_buffer import DEFAULT_CACHE_BYTES, ReplayBuffer

SPLITS = ("train", "val")
RANGE_EPS = 1e-4


def split_episodes(tasks: Sequence[str], val_ratio: float, seed: int) -> np.ndarray:
    """[n_episodes] bool, True for validation episodes: round(val_ratio * n) of each task's n episodes,
    at least one and never all of them when val_ratio > 0 and the task has >= 2 episodes."""
    is_val = np.zeros(len(tasks), dtype=bool)
    if val_ratio <= 0:
        return is_val
    rng = np.random.default_rng(seed)
    task_of = np.asarray(tasks)
    for task in sorted(set(tasks)):
        episodes = np.flatnonzero(task_of == task)
        if len(episodes) >= 2:
            n_val = min(max(1, round(val_ratio * len(episodes))), len(episodes) - 1)
            is_val[rng.choice(episodes, size=n_val, replace=False)] = True
    return is_val


def normalize(x: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """Min-max map x [..., D] to [-1, 1] per dimension; a dimension with range < 1e-4 is centred on 0."""
    lo, hi = stats["min"], stats["max"]
    half_range = (hi - lo) / 2
    half_range = np.where(half_range < RANGE_EPS / 2, 1.0, half_range)
    return ((x - (lo + hi) / 2) / half_range).astype(np.float32)


class MultitaskSequenceDataset(Dataset):
    """Sequences of `horizon` steps from a multitask replay buffer, split into train and val by episode.

    A sample is {"obs": {rgb key: uint8 [n_obs_steps, 3, H, W], low_dim key: float32 [n_obs_steps, D]},
    "action": float32 [horizon, A], "instruction": str, "index": int}, low-dim values and actions normalized
    to [-1, 1]; "index" is the sample's index, which keys its random draws in training.

    shape_meta (diffusion_policy style): {"obs": {key: {"shape": [...], "type": "rgb" | "low_dim"}},
    "action": {"shape": [A]}}; images are stored [H, W, 3] (uint8, or floats in 0..255 as in
    diffusion_policy's Push-T buffer) and must match shape [3, H, W]. `key_map` says where a key is stored
    when not as itself ({"image": "img", "agent_pos": "state[0:2]"}); `episode_tasks` names the task and
    instruction of the episodes of a buffer that stores none (`buffer_mapping.label_episodes`).
    `tasks` keeps only the episodes of those task names; `max_train_episodes` keeps a seeded random subset
    of the training episodes. Each task's episodes are split on their own, so val covers every task and
    an episode's split does not depend on `tasks`.
    """

    def __init__(
        self,
        dataset_path: str,
        *,
        shape_meta: Mapping,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        pad_before: int | None = None,
        pad_after: int | None = None,
        val_ratio: float = 0.1,
        seed: int = 42,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        max_train_episodes: int | None = None,
        key_map: Mapping[str, str] | None = None,
        episode_tasks: Sequence[Mapping] | None = None,
        storage_options: dict | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        pad_before = n_obs_steps - 1 if pad_before is None else pad_before
        pad_after = n_action_steps - 1 if pad_after is None else pad_after
        if not 1 <= n_obs_steps <= horizon or n_action_steps < 1 or pad_before < 0 or pad_after < 0:
            raise LbmError(
                "need 1 <= n_obs_steps <= horizon, n_action_steps >= 1 and pad_before, pad_after >= 0; got "
                f"horizon={horizon}, n_obs_steps={n_obs_steps}, n_action_steps={n_action_steps}, "
                f"pad_before={pad_before}, pad_after={pad_after}"
            )
        if not 0 <= val_ratio < 1:
            raise LbmError(f"val_ratio must be in [0, 1), got {val_ratio}")
        self.dataset_path = dataset_path
        self.storage_options = storage_options
        self.cache_bytes = cache_bytes
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.pad_before = pad_before
        self.pad_after = pad_after

        buffer = ReplayBuffer.open(dataset_path, storage_options, cache_bytes=cache_bytes)
        self._buffer: ReplayBuffer | None = buffer
        self._buffer_pid = os.getpid()
        self._stored = stored_keys(shape_meta, key_map)
        self.rgb_keys, self.low_dim_keys = _check_shape_meta(shape_meta, buffer, self._stored)
        self._starts = buffer.episode_starts
        self._lengths = buffer.episode_ends - self._starts
        episode_task_names, self._episode_instructions = label_episodes(
            buffer.episode_tasks, buffer.episode_instructions, buffer.n_episodes, episode_tasks, dataset_path
        )

        kept = _select_tasks(episode_task_names, tasks)
        is_val = split_episodes(episode_task_names, val_ratio, seed)
        val = kept[is_val[kept]]
        train = kept[~is_val[kept]]
        if val_ratio > 0 and len(val) == 0 and len(kept) >= 2:
            moved = np.random.default_rng(seed).choice(len(train))
            val, train = train[moved : moved + 1], np.delete(train, moved)
        if max_train_episodes is not None and len(train) > max_train_episodes:
            train = np.sort(np.random.default_rng(seed).choice(train, size=max_train_episodes, replace=False))
        if len(train) == 0:
            raise LbmError(f"no training episodes in {dataset_path} (tasks={tasks}, val_ratio={val_ratio})")
        self._episodes_by_split = {"train": train, "val": val}
        self.instructions = sorted({self._episode_instructions[i] for i in kept})
        self._stats = self._compute_stats(buffer, train)
        self._use_split(split)

    # ---- the Dataset protocol -----------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._sample_ends[-1]) if len(self._sample_ends) else 0

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Samples at `indices`, reading each chunk they need once (DataLoader calls this per batch)."""
        index = np.asarray(indices, dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"sample index out of range 0..{len(self) - 1}: {indices}")
        slot = np.searchsorted(self._sample_ends, index, side="right")
        episode = self._episodes[slot]
        first_sample = self._sample_ends[slot] - self._sample_counts[slot]
        window_start = index - first_sample - self.pad_before
        length = self._lengths[episode][:, None]
        offsets = np.clip(window_start[:, None] + np.arange(self.horizon), 0, length - 1)
        steps = self._starts[episode][:, None] + offsets  # [B, horizon] buffer steps, edges repeated
        obs_steps = steps[:, : self.n_obs_steps]

        buffer = self._open_buffer()
        batch, n_obs = len(index), self.n_obs_steps
        obs: dict[str, torch.Tensor] = {}
        for key in self.rgb_keys:
            frames = self._read(buffer, key, obs_steps.ravel())  # [B * n_obs, H, W, 3]
            if frames.dtype != np.uint8:
                frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
            frames = frames.reshape(batch, n_obs, *frames.shape[1:]).transpose(0, 1, 4, 2, 3)
            obs[key] = torch.from_numpy(np.ascontiguousarray(frames))
        for key in self.low_dim_keys:
            values = self._read(buffer, key, obs_steps.ravel()).reshape(batch, n_obs, -1)
            obs[key] = torch.from_numpy(normalize(values, self._stats[key]))
        actions = self._read(buffer, "action", steps.ravel()).reshape(batch, self.horizon, -1)
        action = torch.from_numpy(normalize(actions, self._stats["action"]))
        return [
            {
                "obs": {key: value[b] for key, value in obs.items()},
                "action": action[b],
                "instruction": self._episode_instructions[episode[b]],
                "index": int(index[b]),
            }
            for b in range(batch)
        ]

    # ---- what the trainer asks for ------------------------------------------------------------------

    def normalizer_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """{key: {"min": [D], "max": [D]}} for "action" and each low-dim key, over the training episodes."""
        return {key: {name: v.copy() for name, v in stats.items()} for key, stats in self._stats.items()}

    def get_validation_dataset(self) -> MultitaskSequenceDataset:
        """The validation split, sharing this dataset's training statistics."""
        val = copy.copy(self)
        val._use_split("val")
        return val

    @property
    def split(self) -> str:
        return self._split

    @property
    def episodes(self) -> np.ndarray:
        """Replay buffer indices of this split's episodes."""
        return self._episodes.copy()

    # ---- internals ----------------------------------------------------------------------------------

    def _use_split(self, split: str) -> None:
        if split not in SPLITS:
            raise LbmError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self._split = split
        self._episodes = self._episodes_by_split[split]
        lengths = self._lengths[self._episodes]
        self._sample_counts = np.maximum(lengths + self.pad_before + self.pad_after - self.horizon + 1, 0)
        self._sample_ends = np.cumsum(self._sample_counts)

    def _read(self, buffer: ReplayBuffer, key: str, steps: np.ndarray) -> np.ndarray:
        """The values of shape_meta key `key` (or "action") at buffer steps [N] -> [N, ...]."""
        stored = self._stored[key]
        return stored.select(buffer.read_steps(stored.key, steps))

    def _open_buffer(self) -> ReplayBuffer:
        """The replay buffer, opened again in a new process (a forked or spawned DataLoader worker)."""
        if self._buffer is None or self._buffer_pid != os.getpid():
            self._buffer = ReplayBuffer.open(
                self.dataset_path, self.storage_options, cache_bytes=self.cache_bytes
            )
            self._buffer_pid = os.getpid()
        return self._buffer

    def _compute_stats(self, buffer: ReplayBuffer, episodes: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Per-dimension min and max of each low-dim key and "action" over `episodes`, chunk by chunk."""
        order = np.sort(episodes)
        starts, ends = self._starts[order], self._starts[order] + self._lengths[order]
        stats = {}
        for key in [*self.low_dim_keys, "action"]:
            lo = hi = None
            stored = self._stored[key]
            for first, rows in buffer.iter_chunks(stored.key):
                rows = stored.select(rows)
                mask = _steps_in(starts, ends, first, len(rows))
                if mask.any():
                    chosen = rows[mask].reshape(int(mask.sum()), -1)
                    lo = chosen.min(0) if lo is None else np.minimum(lo, chosen.min(0))
                    hi = chosen.max(0) if hi is None else np.maximum(hi, chosen.max(0))
            stats[key] = {"min": lo.astype(np.float32), "max": hi.astype(np.float32)}
        return stats

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_buffer"] = None
        return state


def _steps_in(starts: np.ndarray, ends: np.ndarray, first: int, n: int) -> np.ndarray:
    """[n] bool: which of steps first .. first + n - 1 lie in one of the sorted intervals [starts, ends)."""
    mask = np.zeros(n, dtype=bool)
    lo = np.searchsorted(ends, first, side="right")
    hi = np.searchsorted(starts, first + n, side="left")
    for start, end in zip(starts[lo:hi], ends[lo:hi], strict=True):
        mask[max(start - first, 0) : min(end - first, n)] = True
    return mask


def _select_tasks(episode_tasks: list[str], tasks: Sequence[str] | None) -> np.ndarray:
    """Indices of the episodes whose task is in `tasks` (all when None); LbmError for unknown names."""
    if tasks is None:
        return np.arange(len(episode_tasks))
    if isinstance(tasks, str):
        tasks = [tasks]
    available = sorted(set(episode_tasks))
    unknown = [t for t in tasks if t not in available]
    if unknown or not tasks:
        raise LbmError(
            f"unknown task(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(available)}"
        )
    return np.flatnonzero(np.isin(np.asarray(episode_tasks), list(tasks)))


def _check_shape_meta(
    shape_meta: Mapping, buffer: ReplayBuffer, stored_keys: Mapping[str, StoredKey]
) -> tuple[list[str], list[str]]:
    """(rgb keys, low-dim keys) of shape_meta, each checked against where it is stored."""

    def stored(key: str) -> tuple[int, ...]:
        where = stored_keys[key]
        if where.key not in buffer:
            mapped = "" if where.key == key else f" (key_map: {key} -> {where})"
            raise LbmError(
                f"shape_meta names {key!r}{mapped}, which {buffer.url} lacks; it has "
                f"{', '.join(buffer.keys())} (map shape_meta's keys to those with task.dataset.key_map)"
            )
        shape = tuple(buffer[where.key].shape[1:])
        if where.start is not None or where.stop is not None:
            if not shape:
                raise LbmError(f"key_map {key} -> {where}: data/{where.key} has one value per step, no range")
            return where.shape(shape)
        return shape

    def described(key: str) -> str:
        where = stored_keys[key]
        return repr(key) if where.key == key else f"{key!r} (data/{where})"

    rgb_keys, low_dim_keys = [], []
    for key, meta in shape_meta["obs"].items():
        shape, kind = tuple(meta["shape"]), meta.get("type", "low_dim")
        if kind == "rgb":
            stored_shape, dtype = stored(key), buffer[stored_keys[key].key].dtype
            if (
                len(shape) != 3
                or shape[0] != 3
                or stored_shape != (*shape[1:], 3)
                or not (dtype == np.uint8 or dtype.kind == "f")
            ):
                raise LbmError(
                    f"image {described(key)} is stored as {dtype} {list(stored_shape)} (H, W, C) but "
                    f"shape_meta asks for {list(shape)} (C, H, W); make shape_meta match the stored images "
                    "(uint8 [H, W, 3] stored, [3, H, W] in shape_meta) or make the dataset at that size"
                )
            rgb_keys.append(key)
        elif kind == "low_dim":
            if stored(key) != shape:
                raise LbmError(
                    f"{described(key)} is stored with shape {list(stored(key))} but shape_meta says "
                    f"{list(shape)}"
                )
            low_dim_keys.append(key)
        else:
            raise LbmError(f"shape_meta obs {key!r} has type {kind!r}; use 'rgb' or 'low_dim'")
    action_shape = tuple(shape_meta["action"]["shape"])
    if stored("action") != action_shape:
        raise LbmError(
            f"{described('action')} is stored with shape {list(stored('action'))} but shape_meta says "
            f"{list(action_shape)}"
        )
    return rgb_keys, low_dim_keys
