"""Meta-World (the `metaworld` package, `.[metaworld]`) as an environment suite: its Sawyer arm tasks, a new
seeded configuration of objects and goal per episode, and its scripted experts.

Observations: `state` float32 [39] (hand position, gripper opening, two objects' poses, the previous
step's, and the goal, which the multitask benchmarks show the policy), and with `image_size` an `image`
uint8 [S, S, 3] from `camera`. Actions: float [4] in [-1, 1] (hand displacement, gripper effort). Success
is Meta-World's own `info["success"]`, counted at any step. Renders headless through MuJoCo's EGL backend
unless MUJOCO_GL says otherwise (`osmesa` needs Debian's libosmesa6), with shadows and anti-aliasing off.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np

from lbm.errors import LbmError

MT10 = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)
BENCHMARKS = {"mt10": MT10}
CAMERAS = ("corner", "corner2", "corner3", "topview", "behindGripper", "gripperPOV")
# Cameras whose frames come out upside down.
FLIPPED_CAMERAS = ("corner", "corner2", "corner3")
STATE_DIM = 39
ACTION_DIM = 4
MAX_STEPS = 500
VIDEO_SIZE = 128


def instruction(task: str) -> str:
    """The instruction of a task, from its name: "drawer-open-v3" -> "drawer open"."""
    return task.rsplit("-v", 1)[0].replace("-", " ")


def _metaworld():
    os.environ.setdefault("MUJOCO_GL", "egl")
    # The scripted policies warn on every step that the env clips their actions (we clip them first).
    warnings.filterwarnings("ignore", r"Constant\(s\) may be too high", UserWarning)
    logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)
    try:
        import metaworld
        import metaworld.policies
    except ImportError as error:
        raise LbmError(
            f"Meta-World is not installed ({error}); install it with `pip install -e '.[metaworld]'`"
        ) from None
    return metaworld


@functools.cache
def _import_triton_before_rendering() -> None:
    """Import triton (PyTorch's compiler, which diffusers imports) if installed, before Mesa first renders:
    both bring their own LLVM, and triton loaded after Mesa's software renderer crashes the process."""
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


def resolve_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Task names from a benchmark name ("mt10") or a list of task names; LbmError for unknown ones."""
    if isinstance(tasks, str):
        tasks = list(BENCHMARKS.get(tasks.lower(), [tasks]))
    _metaworld()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    unknown = [t for t in tasks if t not in ALL_V3_ENVIRONMENTS]
    if unknown or not tasks:
        raise LbmError(
            f"unknown Meta-World task(s) {', '.join(unknown) or '(none given)'}: give "
            f"{' or '.join(BENCHMARKS)} or task names such as {', '.join(MT10[:3])}"
        )
    return list(tasks)


class MetaWorldEnv:
    """One Meta-World task; see the module docstring for observations, actions and success."""

    def __init__(
        self, task: str, image_size: int | None = None, camera: str = "corner2", max_steps: int = MAX_STEPS
    ) -> None:
        metaworld = _metaworld()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if camera not in CAMERAS:
            raise LbmError(f"unknown Meta-World camera {camera!r}; use one of {', '.join(CAMERAS)}")
        self.task, self.instruction = task, instruction(task)
        self.max_steps = min(max_steps, MAX_STEPS)
        self.image_size, self._flip = image_size, camera in FLIPPED_CAMERAS
        size = image_size or VIDEO_SIZE
        self._env = ALL_V3_ENVIRONMENTS[task](
            render_mode="rgb_array", camera_name=camera, width=size, height=size
        )
        self._env.model.vis.quality.offsamples = 0
        self._env.model.light_castshadow[:] = 0
        # As Meta-World's multitask benchmarks set their tasks up: the goal is part of the state (its
        # observation bounds are recomputed), and each reset draws a configuration from the env's seed.
        self._env._partially_observable = False
        self._env.__dict__.pop("sawyer_observation_space", None)
        self._env._set_task_called = True
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._expert = metaworld.policies.ENV_POLICY_MAP[task]()
        self._state = np.zeros(STATE_DIM)
        self.info: dict = {}  # Meta-World's info of the last step (its distances, success)

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self._env.seed(seed)
        self._state, _ = self._env.reset()
        return self.observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool]:
        self._state, _, _, _, self.info = self._env.step(np.clip(np.asarray(action, dtype=np.float64), -1, 1))
        return self.observation(), bool(self.info["success"])

    def observation(self) -> dict[str, np.ndarray]:
        obs = {"state": self._state.astype(np.float32)}
        if self.image_size:
            obs["image"] = self.render()
        return obs

    def render(self) -> np.ndarray:
        _import_triton_before_rendering()
        frame = self._env.render()
        return np.ascontiguousarray(frame[::-1] if self._flip else frame)

    def expert_action(self) -> np.ndarray:
        """Meta-World's scripted policy for this task, in [-1, 1]."""
        return np.clip(self._expert.get_action(self._state), -1, 1).astype(np.float32)

    def close(self) -> None:
        self._env.close()


class MetaWorldSuite:
    """Meta-World tasks (`tasks`: "mt10" or a list of names) as environments of one size and camera."""

    def __init__(
        self,
        tasks: str | Sequence[str] = "mt10",
        image_size: int | None = None,
        camera: str = "corner2",
        max_steps: int = MAX_STEPS,
    ) -> None:
        if image_size is not None and image_size < 8:
            raise LbmError(f"image_size must be at least 8 pixels, got {image_size}")
        if max_steps < 1:
            raise LbmError(f"max_steps must be >= 1, got {max_steps}")
        self.tasks = resolve_tasks(tasks)
        self.image_size, self.camera, self.max_steps = image_size, camera, max_steps

    def make(self, task: str) -> MetaWorldEnv:
        if task not in self.tasks:
            raise LbmError(f"unknown task {task!r}; the environment has {', '.join(self.tasks)}")
        return MetaWorldEnv(task, self.image_size, self.camera, self.max_steps)
