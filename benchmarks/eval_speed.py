"""Episodes per second of `lbm eval` in each checkpoint's environment (the synthetic scene, Meta-World), the
whole command and the rollouts alone.

Runs `lbm eval --checkpoint CKPT --episodes N` as a new process `--rounds` times per checkpoint, the
checkpoints taking turns within each round, and reports per checkpoint the medians of: the rollouts' own
rate (from eval.json: episodes over the time of the lockstep rollouts, the policy's sampling included) and
the whole command's rate (process start, imports and checkpoint loading included). Torch uses `--threads`
CPU threads (OMP_NUM_THREADS).

    python benchmarks/eval_speed.py --episodes 50 --rounds 3 \
        --checkpoint synthetic/epoch_6-step_3312.ckpt metaworld/epoch_60-step_1380.ckpt
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
    parser.add_argument("--checkpoint", required=True, nargs="+", help="checkpoints of configs with rollouts")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    rollout_rates = {c: [] for c in args.checkpoint}
    command_rates = {c: [] for c in args.checkpoint}
    success = {c: [] for c in args.checkpoint}
    with tempfile.TemporaryDirectory(prefix="lbm-eval-speed-") as tmp:
        for _ in range(args.rounds):
            for checkpoint in args.checkpoint:
                command = [sys.executable, "-m", "lbm.cli.main", "eval", "--checkpoint", checkpoint]
                command += ["--episodes", str(args.episodes), "--output-dir", tmp]
                started = time.perf_counter()
                subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
                seconds = time.perf_counter() - started
                summary = json.loads((Path(tmp) / "eval.json").read_text())
                rollout_rates[checkpoint].append(round(summary["episodes_per_second"], 2))
                command_rates[checkpoint].append(args.episodes / seconds)
                success[checkpoint].append(summary["success_rate"])
    print(f"{args.episodes} episodes, {args.rounds} rounds, {args.threads} torch thread(s)")
    for checkpoint in args.checkpoint:
        print(checkpoint)
        rates = rollout_rates[checkpoint]
        print(f"  rollouts: median {statistics.median(rates):.2f} episodes/s ({rates})")
        print(f"  whole command: median {statistics.median(command_rates[checkpoint]):.2f} episodes/s")
        print(f"  success rate: {success[checkpoint]}")


if __name__ == "__main__":
    main()
