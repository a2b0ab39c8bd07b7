"""How a replay buffer that another tool wrote maps onto a task config: its keys to shape_meta's, and its
episodes to task names and instructions where it stores none (diffusion_policy's ReplayBuffer)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lbm.errors import LbmError

# "state" or "state[0:2]": data/state, optionally a range of its last dimension.
STORED_KEY = re.compile(r"(?P<key>[A-Za-z0-9_.-]+)(\[(?P<start>\d*):(?P<stop>\d*)\])?")


@dataclass(frozen=True)
class StoredKey:
    """Where the values of one shape_meta key are stored: data/<key>, or a range of its last dimension."""

    key: str
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, text: str) -> StoredKey:
        match = STORED_KEY.fullmatch(str(text))
        if match is None:
            raise LbmError(
                f"key_map value {text!r} is not a stored key: write KEY or KEY[START:STOP] (e.g. state[0:2])"
            )
        start, stop = (int(v) if v else None for v in match.group("start", "stop"))
        return cls(match["key"], start, stop)

    def select(self, values: np.ndarray) -> np.ndarray:
        """The mapped part of stored values [..., D]."""
        if self.start is None and self.stop is None:
            return values
        return values[..., self.start : self.stop]

    def shape(self, stored_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-step shape of the mapped values, from the stored per-step shape."""
        if self.start is None and self.stop is None:
            return stored_shape
        return (*stored_shape[:-1], len(range(stored_shape[-1])[self.start : self.stop]))

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.key
        return f"{self.key}[{self.start or ''}:{'' if self.stop is None else self.stop}]"


def stored_keys(shape_meta: Mapping, key_map: Mapping[str, str] | None) -> dict[str, StoredKey]:
    """{shape_meta obs key or "action": where it is stored}; a key key_map leaves out is stored as itself."""
    names = [*shape_meta["obs"], "action"]
    key_map = dict(key_map or {})
    unknown = sorted(set(key_map) - set(names))
    if unknown:
        raise LbmError(
            f"key_map maps {', '.join(unknown)}, which shape_meta lacks; it maps shape_meta's keys "
            f"({', '.join(names)}) to the buffer's data/<key>"
        )
    return {name: StoredKey.parse(key_map.get(name, name)) for name in names}


def label_episodes(
    stored_tasks: list[str] | None,
    stored_instructions: list[str] | None,
    n_episodes: int,
    episode_tasks: Sequence[Mapping] | None,
    url: str,
) -> tuple[list[str], list[str]]:
    """(task, instruction) of every episode: the buffer's own, else those of `episode_tasks`.

    `episode_tasks` is a list of {task, instruction, episodes: [first, stop) or None for all}; the ranges
    must cover every episode once.
    """
    if stored_tasks is not None and stored_instructions is not None:
        if episode_tasks:
            raise LbmError(
                f"{url} stores a task and instruction per episode; remove task.dataset.episode_tasks "
                "(it is for buffers that store none, such as diffusion_policy's)"
            )
        return stored_tasks, stored_instructions
    if not episode_tasks:
        raise LbmError(
            f"{url} stores no task or instruction per episode (a diffusion_policy replay buffer): name them "
            "in the task config, task.dataset.episode_tasks: [{task: NAME, instruction: TEXT}], or one "
            "such entry per range of episodes with episodes: [FIRST, STOP]"
        )
    tasks: list[str | None] = [None] * n_episodes
    instructions = [""] * n_episodes
    for entry in episode_tasks:
        first, stop = entry.get("episodes") or (0, n_episodes)
        if not 0 <= first < stop <= n_episodes:
            raise LbmError(
                f"episode_tasks range [{first}, {stop}) of task {entry['task']!r} is not within the "
                f"{n_episodes} episodes of {url}"
            )
        overlap = [i for i in range(first, stop) if tasks[i] is not None]
        if overlap:
            raise LbmError(
                f"episode_tasks gives episode {overlap[0]} of {url} two tasks "
                f"({tasks[overlap[0]]!r} and {entry['task']!r}); make the ranges disjoint"
            )
        tasks[first:stop] = [str(entry["task"])] * (stop - first)
        instructions[first:stop] = [str(entry["instruction"])] * (stop - first)
    missing = [i for i, task in enumerate(tasks) if task is None]
    if missing:
        raise LbmError(
            f"episode_tasks names no task for {len(missing)} of the {n_episodes} episodes of {url} "
            f"(the first is episode {missing[0]}); cover every episode"
        )
    return tasks, instructions
