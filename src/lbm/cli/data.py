"""`lbm data`: make a synthetic or Meta-World multitask dataset, or describe one (no torch import)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from lbm.cli.entry import ArgumentParser
from lbm.errors import LbmError


def build_parser() -> ArgumentParser:
    from lbm.train.data.metaworld_demos import EPISODES_PER_TASK, STEPS_AFTER_SUCCESS

    parser = ArgumentParser(prog="lbm data", description="Make or inspect replay buffer datasets.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{synth,metaworld,info}")
    synth = commands.add_parser(
        "synth",
        help="write a synthetic 'reach the <colour> <shape>' dataset",
        description="Write a multitask dataset of camera images, agent positions and actions from a scripted "
        "expert in a small 2-D arena.",
    )
    synth.add_argument("--out", required=True, help="where to write it: a local path or URL (s3://...)")
    synth.add_argument("--tasks", type=int, default=4, help="number of tasks, 1 to 8 (default 4)")
    synth.add_argument("--episodes-per-task", type=int, default=10, help="episodes per task (default 10)")
    synth.add_argument(
        "--image-size", type=int, default=96, help="image height and width in pixels (default 96)"
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same bytes")
    synth.add_argument("--force", action="store_true", help="replace a dataset already at --out")
    metaworld = commands.add_parser(
        "metaworld",
        help="write Meta-World expert demonstrations",
        description="Write the scripted experts' successful episodes in Meta-World tasks, each from a new "
        "seeded configuration and recorded to --steps-after-success steps after the first success, with the "
        "39-dim state, the 4-dim action and, with --image-size, a camera image. Needs "
        "`pip install -e '.[metaworld]'`.",
    )
    metaworld.add_argument("--out", required=True, help="where to write it: a local path or URL (s3://...)")
    metaworld.add_argument(
        "--tasks", nargs="+", default=["mt10"], help="mt10 (default) or task names such as reach-v3 push-v3"
    )
    metaworld.add_argument(
        "--episodes-per-task",
        type=int,
        default=EPISODES_PER_TASK,
        help=f"episodes per task (default {EPISODES_PER_TASK})",
    )
    metaworld.add_argument(
        "--steps-after-success",
        type=int,
        default=STEPS_AFTER_SUCCESS,
        help=f"steps of the expert recorded after the first success (default {STEPS_AFTER_SUCCESS})",
    )
    metaworld.add_argument("--image-size", type=int, help="also store camera images of this size (pixels)")
    metaworld.add_argument("--camera", default="corner2", help="the camera of the images (default corner2)")
    metaworld.add_argument(
        "--seed", type=int, default=0, help="first configuration seed of each task (default 0)"
    )
    metaworld.add_argument("--force", action="store_true", help="replace a dataset already at --out")
    info = commands.add_parser(
        "info", help="describe a dataset", description="Describe a replay buffer dataset."
    )
    info.add_argument("path", help="local path or URL of the dataset")
    return parser


def synth(args) -> int:
    from lbm.train.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(
        args.out,
        num_tasks=args.tasks,
        episodes_per_task=args.episodes_per_task,
        image_size=args.image_size,
        seed=args.seed,
        overwrite=args.force,
    )
    print(f"wrote {args.tasks * args.episodes_per_task} episodes ({args.tasks} tasks) to {args.out}")
    return 0


def metaworld(args) -> int:
    from lbm.train.data.metaworld_demos import write_metaworld_dataset

    if args.seed < 0:
        raise LbmError(f"--seed must be >= 0, got {args.seed}")
    records = write_metaworld_dataset(
        args.out,
        tasks=args.tasks[0] if len(args.tasks) == 1 else args.tasks,
        episodes_per_task=args.episodes_per_task,
        steps_after_success=args.steps_after_success,
        image_size=args.image_size,
        camera=args.camera,
        seed=args.seed,
        overwrite=args.force,
    )
    print(f"wrote {sum(r.successes for r in records)} episodes ({len(records)} tasks) to {args.out}")
    print("scripted expert:")
    for r in records:
        print(
            f"  {r.task:<24} {r.successes}/{r.attempts} succeeded ({r.success_rate:.0%}), "
            f"{np.mean(r.steps):.0f} steps to success on average"
        )
    return 0


def info(args) -> int:
    from lbm.train.data.replay_buffer import ReplayBuffer

    buffer = ReplayBuffer.open(args.path)
    print(f"{buffer.url}: {buffer.n_episodes} episodes, {buffer.n_steps} steps")
    for key in buffer:
        array = buffer[key]
        print(
            f"  data/{key:<12} {str(array.dtype):<8} shape {list(array.shape)}  chunks {list(array.chunks)}"
        )
    if buffer.episode_tasks is None or buffer.episode_instructions is None:
        print(
            "tasks: none stored (a diffusion_policy replay buffer); name them in task.dataset.episode_tasks"
        )
        return 0
    counts = Counter(zip(buffer.episode_tasks, buffer.episode_instructions, strict=True))
    print("tasks:")
    for (task, instruction), n in sorted(counts.items()):
        print(f"  {task:<16} {n:>5} episodes  {instruction!r}")
    return 0


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    return {"synth": synth, "metaworld": metaworld, "info": info}[args.command](args)
