"""The synthetic scene: "reach the <colour> <shape>" in a 2-D arena, its scripted expert, and the scene as an
environment a policy acts in.

Every frame shows all of an episode's goal markers and a round agent, so only the instruction says which
goal to reach. Positions are unit coordinates (x, y) in [0, 1], y pointing down the image rows. An action is
the next target position (absolute, as in pusht); the agent moves there, at most MAX_REACH per step, inside
the arena. An episode succeeds when the agent's centre is within SUCCESS_RADIUS of its goal's centre, and
fails after MAX_STEPS steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lbm.errors import LbmError

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
# Success: the agent's centre on the inner half of its goal marker.
SUCCESS_RADIUS = GOAL_RADIUS / 2
# The farthest the agent moves in one step: twice the expert's speed, so the expert's moves are followed.
MAX_REACH = 2 * MAX_SPEED
MAX_STEPS = 200
MIN_IMAGE_SIZE = 16


@dataclass(frozen=True)
class Goal:
    """One goal marker kind; task k of a scene is to reach GOALS[k]."""

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


def place(rng: np.random.Generator, num_tasks: int, task_index: int) -> tuple[np.ndarray, np.ndarray]:
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


def expert_done(pos: np.ndarray, goal: np.ndarray) -> bool:
    """Whether the scripted expert is within REACHED of its goal (its last step then commands the goal)."""
    return bool(np.linalg.norm(goal - pos) <= REACHED)


def expert_action(pos: np.ndarray, goal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scripted expert's next target: a noisy proportional step towards `goal`, the goal once done."""
    if expert_done(pos, goal):
        return goal
    offset = goal - pos
    step = GAIN * offset
    step *= min(1.0, MAX_SPEED / np.linalg.norm(step))
    return np.clip(pos + step + rng.normal(0.0, NOISE, size=2), 0.0, 1.0)


def move(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Where the agent at `pos` ends a step commanded to `target`: towards it, at most MAX_REACH, in the
    arena."""
    offset = np.clip(np.asarray(target, dtype=np.float64), 0.0, 1.0) - pos
    distance = np.linalg.norm(offset)
    if distance > MAX_REACH:
        offset *= MAX_REACH / distance
    return pos + offset


def reached(pos: np.ndarray, goal: np.ndarray) -> bool:
    """Whether an agent at `pos` has succeeded in reaching `goal`."""
    return bool(np.linalg.norm(goal - pos) <= SUCCESS_RADIUS)


def check_scene_options(num_tasks: int, image_size: int) -> None:
    """LbmError unless 1 <= num_tasks <= len(GOALS) and image_size >= MIN_IMAGE_SIZE."""
    if not 1 <= num_tasks <= len(GOALS):
        raise LbmError(f"tasks must be between 1 and {len(GOALS)} (one per goal colour), got {num_tasks}")
    if image_size < MIN_IMAGE_SIZE:
        raise LbmError(f"image size must be >= {MIN_IMAGE_SIZE} pixels, got {image_size}")


class SyntheticReachEnv:
    """One task of the scene as an environment.

    reset(seed) places the goals and the agent from `seed` and returns the first observation; step(action)
    moves the agent (action: the target position [2]) and returns (observation, success). An observation is
    {"image": uint8 [S, S, 3], "agent_pos": float32 [2]}, as in the datasets written from this scene.
    """

    def __init__(self, task_index: int, num_tasks: int, image_size: int, max_steps: int = MAX_STEPS) -> None:
        check_scene_options(num_tasks, image_size)
        if not 0 <= task_index < num_tasks:
            raise LbmError(f"task index {task_index} is not one of the scene's {num_tasks} tasks")
        self.goal = GOALS[task_index]
        self.task, self.instruction = self.goal.task, self.goal.instruction
        self.task_index, self.num_tasks, self.image_size, self.max_steps = (
            task_index,
            num_tasks,
            image_size,
            max_steps,
        )
        self._rng = np.random.default_rng(0)
        self._goals = np.zeros((num_tasks, 2))
        self._pos = np.zeros(2)
        self._background = render_background(self._goals, image_size)

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self._rng = np.random.default_rng(seed)
        self._goals, self._pos = place(self._rng, self.num_tasks, self.task_index)
        self._background = render_background(self._goals, self.image_size)
        return self.observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool]:
        self._pos = move(self._pos, action)
        return self.observation(), reached(self._pos, self._goals[self.task_index])

    def observation(self) -> dict[str, np.ndarray]:
        return {"image": self.render(), "agent_pos": self._pos.astype(np.float32)}

    def render(self) -> np.ndarray:
        return render_frame(self._background, self._pos)

    def expert_action(self) -> np.ndarray:
        """What the scripted expert would command now (it sees the goal's position)."""
        return expert_action(self._pos, self._goals[self.task_index], self._rng)

    def close(self) -> None:
        """Nothing to release: the scene is drawn with numpy."""


class SyntheticReachSuite:
    """The scene's first `num_tasks` tasks at `image_size` pixels, as the datasets of `lbm data synth`."""

    def __init__(self, num_tasks: int = 4, image_size: int = 96, max_steps: int = MAX_STEPS) -> None:
        check_scene_options(num_tasks, image_size)
        self.num_tasks, self.image_size, self.max_steps = num_tasks, image_size, max_steps
        self.tasks = [goal.task for goal in GOALS[:num_tasks]]

    def make(self, task: str) -> SyntheticReachEnv:
        if task not in self.tasks:
            raise LbmError(f"unknown task {task!r} for this scene; its tasks: {', '.join(self.tasks)}")
        return SyntheticReachEnv(self.tasks.index(task), self.num_tasks, self.image_size, self.max_steps)
