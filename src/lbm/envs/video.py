"""Episode videos as GIF files (Pillow), small frames scaled up for people to look at."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lbm.envs.rollout import EpisodeResult

MIN_VIDEO_SIZE = 192


def upscaled(frames: list[np.ndarray], min_size: int = MIN_VIDEO_SIZE) -> np.ndarray:
    """Frames [T, H, W, 3] repeated per pixel so that they are at least `min_size` high."""
    video = np.stack(frames)
    factor = max(1, -(-min_size // video.shape[1]))
    return video.repeat(factor, axis=1).repeat(factor, axis=2)


def write_gif(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Write `frames` (uint8 [H, W, 3] each) as a looping GIF at `path`."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in upscaled(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    return path


def write_episode_gifs(episodes: Sequence[EpisodeResult], directory: Path) -> list[Path]:
    """A GIF of each recorded episode (those with frames) in `directory`, named by its index, task, seed and
    outcome, e.g. `episode_003-reach_red-seed_100003-success.gif`."""
    paths = []
    for j, episode in enumerate(episodes):
        if episode.frames:
            outcome = "success" if episode.success else "failure"
            name = f"episode_{j:03d}-{episode.task}-seed_{episode.seed}-{outcome}.gif"
            paths.append(write_gif(directory / name, episode.frames))
    return paths
