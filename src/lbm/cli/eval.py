"""`lbm eval`: roll out a checkpoint's policy in its task's environment and report success."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lbm.cli.entry import ArgumentParser, run

EVAL_FILE = "eval.json"


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="lbm eval",
        description="Roll out a trained policy (its EMA weights) in closed loop and report its success rate.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file: a local path or URL (s3://...)")
    p.add_argument(
        "--episodes", type=int, default=50, help="episodes in all, tasks taken in turn (default 50)"
    )
    p.add_argument("--tasks", nargs="+", help="only these tasks (default: all of the environment's)")
    p.add_argument(
        "--seed",
        type=int,
        help="episode j starts from seed SEED + j (default: the config's env_runner.test_start_seed)",
    )
    p.add_argument("--video", help="write a GIF of each episode into this directory")
    p.add_argument("--output-dir", default=".", help=f"where {EVAL_FILE} goes (default: here)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA ones")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.episodes < 1:
        parser().error(f"--episodes must be at least 1, got {args.episodes}")
    if args.seed is not None and args.seed < 0:
        parser().error(f"--seed must be >= 0, got {args.seed}")
    output_dir = Path(args.output_dir)
    video_dir = Path(args.video) if args.video else None
    for directory in (output_dir, video_dir):
        if directory is not None and directory.exists() and not directory.is_dir():
            parser().error(f"{directory} exists and is not a directory")

    import torch
    from hydra.utils import instantiate

    from lbm.envs.actors import PolicyActor
    from lbm.envs.rollout import check_tasks, run_episodes
    from lbm.envs.video import write_episode_gifs
    from lbm.errors import LbmError
    from lbm.train.trained_policy import load_policy
    from lbm.train.trainer import pick_device

    device = pick_device(args.device)
    policy, cfg = load_policy(args.checkpoint, use_ema=not args.raw_weights, device=device)
    runner = cfg.task.get("env_runner")
    if not runner:
        raise LbmError(
            f"the config of {args.checkpoint} (task {cfg.task.get('name')}) names no environment "
            "(task.env_runner): there is nothing to roll its policy out in"
        )
    suite = instantiate(runner.env)
    tasks = check_tasks(suite, args.tasks)
    seed = int(runner.test_start_seed) if args.seed is None else args.seed
    torch.set_grad_enabled(False)
    evaluation = run_episodes(
        suite,
        PolicyActor(policy, seed=seed),
        episodes=args.episodes,
        tasks=tasks,
        start_seed=seed,
        record=args.episodes if video_dir else 0,
    )
    summary = {
        "checkpoint": args.checkpoint,
        "seed": seed,
        "ema": not args.raw_weights,
        **evaluation.summary(),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / EVAL_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if video_dir is not None:
        write_episode_gifs(evaluation.episodes, video_dir)
    print_summary(summary)
    print(
        f"wrote {output_dir / EVAL_FILE}"
        + (f" and {len(evaluation.episodes)} videos in {video_dir}" if video_dir else "")
    )
    return 0


def print_summary(summary: dict) -> None:
    from lbm.cli.tables import print_table

    def steps(value: float | None) -> str | None:
        return None if value is None else f"{value:.1f}"

    rows = [
        (task, t["episodes"], f"{t['success_rate']:.1%}", steps(t["mean_steps_to_success"]))
        for task, t in summary["tasks"].items()
    ]
    rows.append(
        (
            "overall",
            summary["episodes"],
            f"{summary['success_rate']:.1%}",
            steps(summary["mean_steps_to_success"]),
        )
    )
    print_table(("TASK", "EPISODES", "SUCCESS", "MEAN STEPS TO SUCCESS"), rows)
    rate = summary["episodes_per_second"]
    print(f"{summary['episodes']} episodes in {summary['seconds']:.1f} s ({rate:.2f} episodes/s)")


if __name__ == "__main__":
    sys.exit(run("lbm eval", main))
