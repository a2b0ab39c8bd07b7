"""A small multitask dataset from a scripted expert: "reach the <colour> <shape>" in a 2-D arena.

Every frame shows all of an episode's goal markers and a round agent, so only the instruction says which
goal to reach. Positions are unit coordinates (x, y) in [0, 1], y pointing down the image rows.
Per step: `image` uint8 [S, S, 3], `agent_pos` float32 [2], `action` float32 [2] (the next target
position, absolute, as in pusht). Same seed, same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lbm.errors import LbmError
from lbm.train.data.replay_buffer import ReplayBufferWriter

BACKGROUND = (235, 235, 235)
AGENT_RGB = (30, 30, 30)
GOAL_RADIUS = 0.06
AGENT_RADIUS = 0.045
ARENA_MARGIN = 0.08
MIN_GOAL_SEPARATION = 0.17
START_DISTANCE = (0.52, 0.9)
# Expert: step = GAIN * (goal - pos), at most MAX_SPEED long, plus N(0, NOISE) per axis; done within REACHED.
GAIN = 0.3
MAX_SPEED = 0.0125
NOISE = 0.002
REACHED = 0.01
MAX_STEPS = 200
MIN_IMAGE_SIZE = 16


@dataclass(frozen=True)
class Goal:
    """One goal marker kind; task k of a dataset is to reach GOALS[k]."""

    colour: str
    rgb: tuple[int, int, int]
    shape: str

    @property
    def task(self) -> str:
        return f"reach_{self.colour}"

    @property
    def instruction(self) -> str:
        return f"reach the {self.colour} {self.shape}"


GOALS = (
    Goal("red", (215, 40, 40), "square"),
    Goal("green", (40, 165, 60), "circle"),
    Goal("blue", (45, 80, 220), "triangle"),
    Goal("yellow", (225, 195, 30), "diamond"),
    Goal("magenta", (200, 50, 200), "cross"),
    Goal("cyan", (30, 185, 200), "ring"),
    Goal("orange", (245, 125, 25), "bar"),
    Goal("purple", (115, 55, 165), "hexagon"),
)


@dataclass(frozen=True)
class SyntheticEpisode:
    """One expert episode of T steps in an arena with `len(goals)` markers."""

    task_index: int
    goals: np.ndarray  # [num_tasks, 2] float64 marker centres (x, y)
    image: np.ndarray  # [T, S, S, 3] uint8
    agent_pos: np.ndarray  # [T, 2] float32
    action: np.ndarray  # [T, 2] float32

    @property
    def goal(self) -> Goal:
        return GOALS[self.task_index]


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pixels of a marker of `shape` and radius r at offsets (dx, dy) from its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    d2 = dx**2 + dy**2
    masks = {
        "square": lambda: np.maximum(ax, ay) <= 0.85 * r,
        "circle": lambda: d2 <= r**2,
        "triangle": lambda: (dy <= 0.8 * r) & (ax <= 0.6 * (dy + r)),
        "diamond": lambda: ax + ay <= 1.15 * r,
        "cross": lambda: ((ax <= r / 3) & (ay <= r)) | ((ay <= r / 3) & (ax <= r)),
        "ring": lambda: (d2 <= r**2) & (d2 >= (0.5 * r) ** 2),
        "bar": lambda: (ax <= r) & (ay <= 0.4 * r),
        "hexagon": lambda: (ay <= 0.87 * r) & (np.sqrt(3) * ax + ay <= np.sqrt(3) * r),
    }
    return masks[shape]()


def render_background(goals: np.ndarray, image_size: int) -> np.ndarray:
    """The arena with goal marker k = GOALS[k] at goals[k] (x, y) -> uint8 [S, S, 3]."""
    centres = (np.arange(image_size) + 0.5) / image_size
    image = np.empty((image_size, image_size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for goal, (x, y) in zip(GOALS, goals, strict=False):
        image[_shape_mask(goal.shape, centres[None, :] - x, centres[:, None] - y, GOAL_RADIUS)] = goal.rgb
    return image


def _pixel_span(centre: float, radius: float, size: int) -> slice:
    """Pixels whose centres (i + 0.5) / size lie within centre +- radius."""
    return slice(
        max(int(np.ceil((centre - radius) * size - 0.5)), 0), min(int((centre + radius) * size + 0.5), size)
    )


def render_frame(background: np.ndarray, agent_pos: np.ndarray) -> np.ndarray:
    """`background` with the agent disc drawn at agent_pos (x, y) -> uint8 [S, S, 3] (a new array)."""
    size = background.shape[0]
    x, y = agent_pos
    rows, cols = _pixel_span(y, AGENT_RADIUS, size), _pixel_span(x, AGENT_RADIUS, size)
    row_centres = (np.arange(rows.start, rows.stop) + 0.5) / size
    col_centres = (np.arange(cols.start, cols.stop) + 0.5) / size
    disc = (col_centres[None, :] - x) ** 2 + (row_centres[:, None] - y) ** 2 <= AGENT_RADIUS**2
    frame = background.copy()
    frame[rows, cols][disc] = AGENT_RGB
    return frame


def _place(rng: np.random.Generator, num_tasks: int, task_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Goal centres [num_tasks, 2], apart from each other, and an agent start far enough from the target."""
    lo, hi = ARENA_MARGIN, 1 - ARENA_MARGIN
    while True:
        goals = rng.uniform(lo, hi, size=(num_tasks, 2))
        gaps = np.linalg.norm(goals[:, None] - goals[None, :], axis=-1) + np.eye(num_tasks)
        if gaps.min() < MIN_GOAL_SEPARATION:
            continue
        for _ in range(100):
            start = rng.uniform(lo, hi, size=2)
            to_goals = np.linalg.norm(goals - start, axis=-1)
            far = START_DISTANCE[0] <= to_goals[task_index] <= START_DISTANCE[1]
            if far and to_goals.min() >= 2 * GOAL_RADIUS:
                return goals, start


def scripted_episode(
    rng: np.random.Generator, *, num_tasks: int, task_index: int, image_size: int
) -> SyntheticEpisode:
    """An expert episode for task `task_index` (a proportional controller with noise, ends at the goal)."""
    goals, pos = _place(rng, num_tasks, task_index)
    goal = goals[task_index]
    positions, actions = [], []
    for _ in range(MAX_STEPS):
        positions.append(pos)
        offset = goal - pos
        if np.linalg.norm(offset) <= REACHED:
            actions.append(goal)
            break
        step = GAIN * offset
        step *= min(1.0, MAX_SPEED / np.linalg.norm(step))
        pos = np.clip(pos + step + rng.normal(0.0, NOISE, size=2), 0.0, 1.0)
        actions.append(pos)
    else:
        raise RuntimeError(f"the expert did not reach its goal in {MAX_STEPS} steps")
    background = render_background(goals, image_size)
    return SyntheticEpisode(
        task_index=task_index,
        goals=goals,
        image=np.stack([render_frame(background, p) for p in positions]),
        agent_pos=np.asarray(positions, dtype=np.float32),
        action=np.asarray(actions, dtype=np.float32),
    )


def check_synthetic_options(num_tasks: int, episodes_per_task: int, image_size: int) -> None:
    """LbmError unless 1 <= num_tasks <= len(GOALS), episodes_per_task >= 1, image_size >= 16."""
    if not 1 <= num_tasks <= len(GOALS):
        raise LbmError(f"tasks must be between 1 and {len(GOALS)} (one per goal colour), got {num_tasks}")
    if episodes_per_task < 1:
        raise LbmError(f"episodes per task must be >= 1, got {episodes_per_task}")
    if image_size < MIN_IMAGE_SIZE:
        raise LbmError(f"image size must be >= {MIN_IMAGE_SIZE} pixels, got {image_size}")


def write_synthetic_dataset(
    url: str,
    *,
    num_tasks: int = 4,
    episodes_per_task: int = 10,
    image_size: int = 96,
    seed: int = 0,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> None:
    """Write num_tasks * episodes_per_task expert episodes (tasks interleaved) as a replay buffer at `url`."""
    check_synthetic_options(num_tasks, episodes_per_task, image_size)
    with ReplayBufferWriter(url, storage_options=storage_options, overwrite=overwrite) as writer:
        for i in range(num_tasks * episodes_per_task):
            task_index = i % num_tasks
            rng = np.random.default_rng([seed, i])
            episode = scripted_episode(rng, num_tasks=num_tasks, task_index=task_index, image_size=image_size)
            writer.add_episode(
                {"image": episode.image, "agent_pos": episode.agent_pos, "action": episode.action},
                task=episode.goal.task,
                instruction=episode.goal.instruction,
            )
