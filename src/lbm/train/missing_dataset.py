"""The one line for a task whose replay buffer is not where `task.dataset_path` points: the `lbm data`
command that makes it (the synthetic scene, Meta-World), or that the buffer is the user's own."""

from __future__ import annotations

from collections.abc import Mapping

from lbm.envs.meta_world import MetaWorldSuite
from lbm.envs.synthetic_reach import SyntheticReachSuite


def _is_suite(env: Mapping, suite: type) -> bool:
    return env.get("_target_") == f"{suite.__module__}.{suite.__qualname__}"


def _command(name: str, url: str, flags: Mapping[str, object]) -> str:
    """`lbm data NAME --out URL` and the flags that are set (a list value as its items)."""
    words = ["lbm data", name, "--out", url]
    for flag, value in flags.items():
        if value is not None:
            items = value if isinstance(value, list | tuple) else [value]
            words += [f"--{flag}", *map(str, items)]
    return " ".join(words)


def missing_dataset_line(task: Mapping, url: str) -> str:
    """What to do about the missing replay buffer at `url` of `task` (a resolved task config)."""
    env = (task.get("env_runner") or {}).get("env") or {}
    rgb = [meta for meta in task["shape_meta"]["obs"].values() if meta.get("type") == "rgb"]
    image_size = rgb[0]["shape"][1] if rgb else None
    synthesize = task.get("synthesize")
    if synthesize or _is_suite(env, SyntheticReachSuite):
        flags = {"tasks": env.get("num_tasks"), "image-size": image_size}
        if synthesize:  # the options it would have been generated with
            flags |= {
                "tasks": synthesize["tasks"],
                "episodes-per-task": synthesize["episodes_per_task"],
                "seed": synthesize["seed"],
            }
        return (
            f"no replay buffer at {url}, the dataset of the synthetic task {task['name']}: make it with "
            f"`{_command('synth', url, flags)}`"
        )
    if _is_suite(env, MetaWorldSuite):
        flags = {
            "tasks": env.get("tasks"),
            "image-size": image_size,
            "camera": env.get("camera") if rgb else None,
        }
        return (
            f"no replay buffer at {url}, the dataset of the Meta-World task {task['name']}: make it with "
            f"`{_command('metaworld', url, flags)}`"
        )
    return (
        f"no replay buffer at {url}, where task.dataset_path of task {task['name']} points: that buffer is "
        "your own (lbm makes only the synthetic and Meta-World ones), so check the path or set "
        "task.dataset_path=<its local path or URL>"
    )
