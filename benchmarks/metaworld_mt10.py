"""Meta-World MT10 from state: one language-conditioned policy's success per task and overall, beside the
scripted experts' on the same episodes.

Runs, in --output-dir: `lbm data metaworld` of --tasks (mt10, or some of its tasks for a quicker probe;
N demonstrations per task, each recorded to --steps-after-success steps after its first success; it
reports how often the expert succeeded while recording), `lbm train` of
train_diffusion_unet_lang_metaworld_mt10_state on them, `lbm eval` of its last checkpoint on --episodes
episodes (tasks in turn, seeds from the config's test_start_seed, none of them a demonstration's), and the
scripted experts on the same episodes. A step whose output is already there is not run again. Torch uses
--threads threads (OMP_NUM_THREADS).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/metaworld_mt10.py --output-dir /tmp/mt10 \
        --episodes-per-task 30 --episodes 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIG = "train_diffusion_unet_lang_metaworld_mt10_state"


def lbm(*argv: str, env: dict) -> float:
    """Run an lbm command to its end; its wall seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lbm.cli.main", *argv], env=env, check=True)
    return time.perf_counter() - started


def expert_rates(config_path: Path, episodes: int) -> dict[str, float]:
    """{task: success rate, "overall": ...} of the scripted experts on the eval's episodes."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lbm.envs.actors import ScriptedExpert
    from lbm.envs.rollout import run_episodes

    runner = OmegaConf.load(config_path).task.env_runner
    evaluation = run_episodes(
        instantiate(runner.env), ScriptedExpert(), episodes=episodes, start_seed=int(runner.test_start_seed)
    )
    return {
        **{t: evaluation.task_success_rate(t) for t in evaluation.tasks},
        "overall": evaluation.success_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--tasks", nargs="+", default=["mt10"], help="mt10 or task names")
    parser.add_argument("--episodes-per-task", type=int, default=30, help="demonstrations per task")
    parser.add_argument(
        "--steps-after-success", type=int, help="expert steps recorded after success (lbm data's default)"
    )
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes, tasks in turn")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the training config")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    root = args.output_dir
    data, run, evaluation = root / "mt10.zarr", root / "run", root / "eval"
    after = (
        [] if args.steps_after_success is None else ["--steps-after-success", str(args.steps_after_success)]
    )
    if not data.exists():
        seconds = lbm(
            "data", "metaworld", "--out", str(data), "--tasks", *args.tasks,
            "--episodes-per-task", str(args.episodes_per_task), *after, env=env,
        )  # fmt: skip
        print(f"demonstrations: {seconds:.0f} s")
    if not (run / "finished").exists():
        tasks = [] if args.tasks == ["mt10"] else [f"task.env_runner.env.tasks=[{','.join(args.tasks)}]"]
        seconds = lbm(
            "train", "--config-file", CONFIG, "--output-dir", str(run), f"task.dataset_path={data}",
            *tasks, *args.overrides, env=env,
        )  # fmt: skip
        (run / "finished").write_text(f"{seconds:.0f}\n")
    checkpoint = max(run.glob("epoch_*-step_*.ckpt"), key=lambda p: int(p.stem.split("step_")[1]))
    if not (evaluation / "eval.json").exists():
        lbm(
            "eval", "--checkpoint", str(checkpoint), "--episodes", str(args.episodes),
            "--output-dir", str(evaluation), env=env,
        )  # fmt: skip
    summary = json.loads((evaluation / "eval.json").read_text())
    expert = expert_rates(run / "config.yaml", args.episodes)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    print(
        f"{CONFIG} {' '.join(args.overrides)}: {args.episodes_per_task} demonstrations per task, "
        f"{args.steps_after_success if after else 'default'} steps after success"
    )
    print(f"training: {records[-1]['step']} steps, {(run / 'finished').read_text().strip()} s wall")
    rate = summary["episodes_per_second"]
    print(f"checkpoint: {checkpoint.name}; {args.episodes} episodes, {rate:.2f} episodes/s")
    print(f"{'task':<26}{'policy':>8}{'expert':>8}")
    for task, result in summary["tasks"].items():
        print(f"{task:<26}{result['success_rate']:>8.0%}{expert[task]:>8.0%}")
    print(f"{'overall':<26}{summary['success_rate']:>8.1%}{expert['overall']:>8.1%}")


if __name__ == "__main__":
    main()
