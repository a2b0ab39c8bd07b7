"""Episodes per second of `lbm eval` in the synthetic scene, whole command and rollouts alone.

Runs `lbm eval --checkpoint CKPT --episodes N` as a new process `--rounds` times and reports the medians of:
the rollouts' own rate (from eval.json: episodes over the time of the lockstep rollouts, the policy's
sampling included) and the whole command's rate (process start, imports and checkpoint loading included).
Torch uses `--threads` CPU threads (OMP_NUM_THREADS).

    python benchmarks/eval_speed.py --checkpoint outputs/.../epoch_5-step_3200.ckpt --episodes 50 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of a synthetic-scene config")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    rollout_rates, command_rates, success = [], [], []
    with tempfile.TemporaryDirectory(prefix="lbm-eval-speed-") as tmp:
        for _ in range(args.rounds):
            command = [sys.executable, "-m", "lbm.cli.main", "eval", "--checkpoint", args.checkpoint]
            command += ["--episodes", str(args.episodes), "--output-dir", tmp]
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - started
            summary = json.loads((Path(tmp) / "eval.json").read_text())
            rollout_rates.append(summary["episodes_per_second"])
            command_rates.append(args.episodes / seconds)
            success.append(summary["success_rate"])
    print(f"{args.episodes} episodes, {args.rounds} rounds, {args.threads} torch thread(s)")
    print(f"rollouts: median {statistics.median(rollout_rates):.2f} episodes/s ({rollout_rates})")
    print(f"whole command: median {statistics.median(command_rates):.2f} episodes/s")
    print(f"success rate: {success}")


if __name__ == "__main__":
    main()
