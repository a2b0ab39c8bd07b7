"""Training throughput of the real loop against the compute limit, checkpoint overhead, and memory.

For one model size it measures, side by side in one run:
- samples/s of the real training loop (data loading, logging, the lr schedule, EMA: everything);
- samples/s of the same loop, model and batch with the batch already in memory (the compute limit), and the
  ratio;
- step time with a checkpoint every 50 steps over step time without;
- peak RSS of a training process (with its loader workers) on the synthetic dataset and on one four times
  larger.

    python benchmarks/train_throughput.py --size tiny
X
    python benchmarks/train_throughput.py --size reference-large   # UNet [256,512,1024]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SIZES = {
    "tiny": [],
    # The public diffusion_policy reference: ResNet-18 on one 96x96 camera cropped to 84, horizon 16,
    # 2 observation steps, batch 64.
    "reference-small": [
        "policy.obs_encoder.rgb_model._target_=lbm.train.models.vision.get_resnet",
        "task.synthesize.image_size=96",
        "task.shape_meta.obs.image.shape=[3,96,96]",
        "policy.obs_encoder.crop_shape=[84,84]",
        "policy.down_dims=[64,128,256]",
        "policy.diffusion_step_embed_dim=128",
        "policy.noise_scheduler.num_train_timesteps=100",
        "dataloader.batch_size=64",
    ],
}
SIZES["reference-large"] = [o for o in SIZES["reference-small"] if "down_dims" not in o] + [
    "policy.down_dims=[256,512,1024]"
]
TINY = "train_diffusion_unet_resnet_lang_tiny"


def overrides_for(size: str, data_dir: Path, scale: int = 1) -> list[str]:
    return [
        *SIZES[size],
        f"task.dataset_path={data_dir}/{size}-x{scale}.zarr",
        f"task.synthesize.episodes_per_task={12 * scale}",
        "training.val_every=1000",
        "training.sample_every=0",
        "logging.mode=disabled",
    ]


class RepeatedBatch:
    """A loader that yields one batch already in memory, as often as the real loader has batches."""

    def __init__(self, batch: dict, length: int):
        self.batch = batch
        self.length = length

    def __iter__(self):
        return itertools.repeat(self.batch, self.length)

    def __len__(self) -> int:
        return self.length


def measure_loop(
    cfg_overrides: list[str], steps: int, checkpoint_every: int, out: Path, in_memory: bool = False
) -> dict:
    """Run the real loop for `steps` steps; its mean step time from the metrics records.

    With `in_memory`, the loader yields one batch already in memory: the compute limit of the same loop.
    """
    from lbm.train.compose import compose_config
    from lbm.train.metrics import read_metrics
    from lbm.train.trainer import Trainer

    log_every = 5
    cfg = compose_config(
        TINY,
        [
            *cfg_overrides,
            f"training.max_train_steps={steps}",
            "training.num_epochs=1000",
            f"training.log_every={log_every}",
            f"checkpoint.every_n_steps={checkpoint_every}",
            *(["dataloader.num_workers=0"] if in_memory else []),
        ],
    )
    trainer = Trainer(cfg, out)
    if in_memory:
        trainer.train_loader = RepeatedBatch(next(iter(trainer.train_loader)), len(trainer.train_loader))
    batch = cfg.dataloader.batch_size
    trainer.run()
    records = read_metrics(out / "metrics.jsonl")[2:]  # the first windows include worker start-up
    # The mean, not the median: a window with a checkpoint in it must count.
    step_s = statistics.mean(batch / r["samples_per_s"] for r in records)
    return {
        "samples_per_s": batch / step_s,
        "step_s": step_s,
        "data_wait_frac": statistics.mean(r["data_wait_frac"] for r in records),
    }


def peak_rss_mb(cfg_overrides: list[str], steps: int, out: Path) -> float:
    """Peak resident memory of an `lbm train` process and its loader workers, sampled every 50 ms."""
    command = [
        sys.executable,
        "-m",
        "lbm.cli.train",
        "--config-file",
        TINY,
        "--output-dir",
        str(out),
        *cfg_overrides,
        f"training.max_train_steps={steps}",
        "training.num_epochs=1000",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    parent, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    if process.returncode != 0:
        raise SystemExit(f"training for the memory measurement failed with {process.returncode}")
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per loop measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the reference used 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every measurement")
    parser.add_argument("--skip-rss", action="store_true", help="leave out the peak-RSS runs")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["LBM_DATA_DIR"] = str(tmp / "data")
        base = overrides_for(args.size, tmp / "data")
        big = overrides_for(args.size, tmp / "data", scale=4)
        # Make both datasets first so that generating them is not measured.
        from lbm.train.compose import compose_config
        from lbm.train.distributed import Distributed
        from lbm.train.trainer import prepare_dataset

        for overrides in (base, big):
            prepare_dataset(compose_config(TINY, overrides).task, Distributed())
        # Interleave the variants over several rounds so that machine noise hits them alike.
        rounds = {"compute": [], "loop": [], "ckpt": []}
        for r in range(args.rounds):
            compute_run = measure_loop(base, args.steps, 10**9, tmp / f"compute-{r}", in_memory=True)
            rounds["compute"].append(compute_run)
            rounds["loop"].append(measure_loop(base, args.steps, 10**9, tmp / f"loop-{r}"))
            rounds["ckpt"].append(measure_loop(base, args.steps, 50, tmp / f"ckpt-{r}"))
        compute, loop, with_ckpt = (
            {key: statistics.median(m[key] for m in runs) for key in runs[0]} for runs in rounds.values()
        )
        if not args.skip_rss:
            rss_small = peak_rss_mb(base, 40, tmp / "rss-x1")
            rss_big = peak_rss_mb(big, 40, tmp / "rss-x4")
    result = {
        "size": args.size,
        "rounds": args.rounds,
        "threads": args.threads,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "loop_samples_per_s": round(loop["samples_per_s"], 2),
        "compute_limit_samples_per_s": round(compute["samples_per_s"], 2),
        "loop_over_compute": round(loop["samples_per_s"] / compute["samples_per_s"], 3),
        "data_wait_frac": round(loop["data_wait_frac"], 4),
        "step_s_checkpoint_every_50": round(with_ckpt["step_s"], 4),
        "step_s_no_checkpoint": round(loop["step_s"], 4),
        "checkpoint_step_time_ratio": round(with_ckpt["step_s"] / loop["step_s"], 3),
    }
    if not args.skip_rss:
        result["peak_rss_mb_dataset_x1"] = round(rss_small)
        result["peak_rss_mb_dataset_x4"] = round(rss_big)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
