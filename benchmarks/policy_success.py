"""Success rate of a training config's policy in the synthetic scene, the job's wall time, and baselines.

Runs `lbm train` for the config as the main job does (a fresh data dir, so generating the dataset is
included in the time), takes the final rollouts' test_mean_score (50 held-out episodes, the EMA policy), and
rolls out on the same episodes the baselines a skeptic tries first: holding still, the dataset's mean action,
uniform random actions in the dataset's action range, and the scripted expert itself.

    python benchmarks/policy_success.py --config train_diffusion_unet_keypoints_lang_tiny
    python benchmarks/policy_success.py --config train_diffusion_unet_keypoints_lang_small
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(config: str, out: Path, data_dir: Path, overrides: list[str]) -> tuple[float, dict]:
    """(wall seconds of `lbm train`, its last metrics record with rollouts)."""
    env = dict(os.environ, LBM_DATA_DIR=str(data_dir))
    command = [
        sys.executable,
        "-m",
        "lbm.cli.main",
        "train",
        "--config-file",
        config,
        "--output-dir",
        str(out),
    ]
    started = time.perf_counter()
    process = subprocess.Popen([*command, *overrides], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"lbm train failed with status {status}")
    print(
        f"lbm train used {usage.ru_utime + usage.ru_stime:.0f} s of CPU (with the loader workers it reaped)"
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return seconds, [r for r in records if "test_mean_score" in r][-1]


def baselines(config: str, data_dir: Path, overrides: list[str]) -> dict[str, float]:
    """Success rates of the baselines on the config's rollout episodes."""
    from hydra.utils import instantiate

    from lbm.envs.actors import ConstantAction, HoldStill, RandomAction, ScriptedExpert
    from lbm.envs.rollout import run_episodes
    from lbm.train.compose import compose_config
    from lbm.train.data.replay_buffer import ReplayBuffer

    os.environ["LBM_DATA_DIR"] = str(data_dir)
    cfg = compose_config(config, overrides)
    runner = cfg.task.env_runner
    actions = ReplayBuffer.open(cfg.task.dataset_path)["action"][:]
    n = int(cfg.n_action_steps)
    actors = {
        "hold still": HoldStill(n_action_steps=n),
        "mean action": ConstantAction(actions.mean(0), n_action_steps=n),
        "random": RandomAction(actions.min(0), actions.max(0), seed=0, n_action_steps=n),
        "scripted expert": ScriptedExpert(),
    }
    return {
        name: run_episodes(
            instantiate(runner.env),
            actor,
            episodes=int(runner.n_test),
            start_seed=int(runner.test_start_seed),
        ).success_rate
        for name, actor in actors.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="train_diffusion_unet_keypoints_lang_tiny")
    parser.add_argument(
        "--output-dir", help="keep the run (checkpoints, metrics) here (default: a temporary dir)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the training config")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbm-policy-success-") as tmp:
        data_dir = Path(tmp) / "data"
        out = Path(args.output_dir) if args.output_dir else Path(tmp) / "run"
        seconds, record = train(args.config, out, data_dir, args.overrides)
        rates = baselines(args.config, data_dir, args.overrides)
    per_task = {
        k.removeprefix("test_success_"): v for k, v in record.items() if k.startswith("test_success_")
    }
    print(f"config: {args.config} {' '.join(args.overrides)}")
    print(f"job wall time (data generation, training, rollouts): {seconds:.0f} s ({seconds / 60:.1f} min)")
    print(
        f"policy success: {record['test_mean_score']:.1%} at step {record['step']}; per task: "
        + ", ".join(f"{task} {rate:.0%}" for task, rate in per_task.items())
    )
    print(
        "baselines on the same episodes: " + ", ".join(f"{name} {rate:.0%}" for name, rate in rates.items())
    )


if __name__ == "__main__":
    main()
