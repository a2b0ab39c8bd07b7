"""Training throughput of the real loop against the compute limit, checkpoint overhead, and memory.

For one model size it measures, side by side in one run, interleaved over rounds:
- compute limit: samples/s of the trainer's own steps on one batch already on the device (no loading);
- loop, train steps only: samples/s of the real loop, loading from zarr through the DataLoader workers;
- loop as a user runs it: the config's own validation, sampling, checkpoints and logging on, over a window
  of one epoch's steps that holds the epoch-end validation and sampling;
- checkpoints: the loop's step time with a checkpoint every `--checkpoint-every` steps, over a window that
  holds three of them, the last one waited for, against the loop's step time without checkpoints;
- peak RSS of an `lbm train` process and its loader workers on the dataset at x1 and x8, with the size of
  its decoded images and of the image chunks the run decodes, against the chunk cache.

All rows use the same config, `--threads` torch threads and the config's loader workers. The first three
and the checkpoint row include, per micro-batch, the forward and backward pass (images cast from uint8 to
float and cropped on the device), the random draws per sample, one `loss.item()` (a device sync), and per
step the AdamW step, the lr schedule, the EMA update and the metrics record every `log_every` steps.
The compute limit leaves out only the loading: no zarr reads, no collation, no copy to the device (its
loader worker delivers the one batch, then idles). Step times come from the clock read after each
optimizer step.

    python benchmarks/train_throughput.py --size tiny --rounds 3
    python benchmarks/train_throughput.py --size reference-small --checkpoint-every 20 --rounds 2
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
TINY = "train_diffusion_unet_keypoints_lang_tiny"
WARMUP_STEPS = 5
TRAIN_STEPS_ONLY = ["training.val_every=1000000", "training.sample_every=0"]


def overrides_for(size: str, data_dir: Path, scale: int = 1) -> list[str]:
    return [
        *SIZES[size],
        f"task.dataset_path={data_dir}/{size}-x{scale}.zarr",
        f"task.synthesize.episodes_per_task={12 * scale}",
        "training.num_epochs=1000",
        "logging.mode=disabled",
    ]


class RepeatedBatch:
    """A loader that yields one batch already on the device, as often as the real loader has batches."""

    def __init__(self, batch: dict, length: int):
        self.batch = batch
        self.length = length

    def __iter__(self):
        return itertools.repeat(self.batch, self.length)

    def __len__(self) -> int:
        return self.length


def timed_run(
    overrides: list[str], steps: int, out: Path, in_memory: bool = False
) -> tuple[list[float], float]:
    """Train `steps` steps; (the clock after each optimizer step, the clock when `run()` returned)."""
    from lbm.train.compose import compose_config
    from lbm.train.trainer import Trainer, to_device

    cfg = compose_config(TINY, [*overrides, f"training.max_train_steps={steps}"])
    trainer = Trainer(cfg, out)
    if in_memory:
        batch = next(iter(trainer.train_loader))
        on_device = {**to_device(batch, trainer.device), "index": batch["index"]}
        trainer.train_loader = RepeatedBatch(on_device, len(trainer.train_loader))
    clock: list[float] = []
    optimizer_step = trainer.optimizer_step

    def timed_optimizer_step() -> None:
        optimizer_step()
        clock.append(time.perf_counter())

    trainer.optimizer_step = timed_optimizer_step
    if trainer.run() != 0:
        raise SystemExit(f"training in {out} was stopped by a signal before its last step")
    return clock, time.perf_counter()


def step_s(clock: list[float], first: int, last: int, end: float | None = None) -> float:
    """Mean seconds per step from after step `first` to after step `last` (or to `end`)."""
    return ((end if end is not None else clock[last - 1]) - clock[first - 1]) / (last - first)


def steps_per_epoch(overrides: list[str]) -> int:
    """Optimizer steps per epoch of one process, as the trainer counts them."""
    from lbm.train.compose import compose_config
    from lbm.train.trainer import build

    cfg = compose_config(TINY, overrides)
    micro_batches = len(build(cfg.task.dataset)) // cfg.dataloader.batch_size
    return micro_batches // cfg.training.gradient_accumulate_every


def data_wait_frac(out: Path) -> float:
    from lbm.train.metrics import read_metrics

    return statistics.mean(r["data_wait_frac"] for r in read_metrics(out / "metrics.jsonl")[1:])


def measure_round(base: list[str], every: int, epoch: int, out: Path, batch: int) -> dict[str, float]:
    """One round of every throughput row, in samples/s (and the checkpoint row's step-time ratio)."""
    steps = 3 * every
    only = [*base, *TRAIN_STEPS_ONLY, "training.log_every=5", "checkpoint.every_n_steps=1000000"]
    clock, _ = timed_run(only, steps, out / "compute", in_memory=True)
    compute = step_s(clock, WARMUP_STEPS, steps)
    clock, _ = timed_run(only, steps, out / "loop")
    loop = step_s(clock, WARMUP_STEPS, steps)
    wait = data_wait_frac(out / "loop")
    with_ckpt = [*base, *TRAIN_STEPS_ONLY, "training.log_every=5", f"checkpoint.every_n_steps={every}"]
    clock, end = timed_run(with_ckpt, steps, out / "ckpt")
    ckpt = step_s(clock, WARMUP_STEPS, steps, end)  # the last checkpoint is written at `steps`, then waited
    clock, _ = timed_run(base, WARMUP_STEPS + epoch, out / "user")
    user = step_s(clock, WARMUP_STEPS, WARMUP_STEPS + epoch)  # one epoch's steps and its validation
    return {
        "compute": batch / compute,
        "loop": batch / loop,
        "user": batch / user,
        "data_wait_frac": wait,
        "step_s_no_checkpoint": loop,
        "step_s_checkpoints": ckpt,
        "checkpoint_ratio": ckpt / loop,
    }


def image_megabytes(overrides: list[str], steps: int) -> tuple[float, float]:
    """(MB of the dataset's decoded images, MB of the distinct chunks that the first `steps` steps of
    training decode), the second counted by reading the same samples through a cache that keeps all."""
    from hydra.utils import instantiate

    from lbm.train.compose import compose_config
    from lbm.train.sampler import EpochSampler

    cfg = compose_config(TINY, overrides)
    dataset = instantiate(cfg.task.dataset, cache_bytes=2**40, _convert_="partial")
    batch = cfg.dataloader.batch_size
    sampler = EpochSampler(len(dataset), seed=int(cfg.training.seed))
    per_epoch = len(sampler) // batch * batch
    indices: list[int] = []
    while len(indices) < steps * batch:
        sampler.set_epoch(len(indices) // per_epoch)
        indices += list(sampler)[:per_epoch]
    for start in range(0, steps * batch, batch):
        dataset.__getitems__(indices[start : start + batch])
    buffer = dataset._open_buffer()
    return buffer["image"].nbytes / 2**20, buffer.cache.nbytes / 2**20


def peak_rss_mb(overrides: list[str], steps: int, out: Path) -> float:
    """Peak resident memory of an `lbm train` process and its loader workers, sampled every 50 ms."""
    command = [
        sys.executable,
        "-m",
        "lbm.cli.train",
        "--config-file",
        TINY,
        "--output-dir",
        str(out),
        *overrides,
        *TRAIN_STEPS_ONLY,
        f"training.max_train_steps={steps}",
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


def throughput(rounds: list[dict], cfg, epoch: int, every: int) -> dict:
    """The throughput rows: medians over the rounds, and each round's figures."""
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return {
        "rounds": len(rounds),
        "steps_per_epoch": epoch,
        "compute_limit_samples_per_s": round(median["compute"], 2),
        "loop_samples_per_s": round(median["loop"], 2),
        "loop_over_compute": round(statistics.median(r["loop"] / r["compute"] for r in rounds), 3),
        "data_wait_frac": round(median["data_wait_frac"], 4),
        "loop_as_run_samples_per_s": round(median["user"], 2),
        "loop_as_run_over_compute": round(statistics.median(r["user"] / r["compute"] for r in rounds), 3),
        "as_run": {key: cfg.training[key] for key in ("val_every", "sample_every", "log_every")}
        | {"checkpoint_every": cfg.checkpoint.every_n_steps},
        "checkpoint_every": every,
        "step_s_checkpoints": round(median["step_s_checkpoints"], 4),
        "step_s_no_checkpoint": round(median["step_s_no_checkpoint"], 4),
        "checkpoint_step_time_ratio": round(median["checkpoint_ratio"], 3),
        "per_round": [{k: round(v, 4) for k, v in r.items()} for r in rounds],
    }


def memory(overrides: dict[int, list[str]], steps: int, cfg, out: Path) -> dict:
    """Peak RSS at each dataset scale, with its decoded image sizes against the chunk cache."""
    from lbm.train.data.replay_buffer import DEFAULT_CACHE_BYTES

    cache_mb = cfg.task.dataset.get("cache_bytes", DEFAULT_CACHE_BYTES) / 2**20
    result = {}
    for scale, scaled in overrides.items():
        images_mb, decoded_mb = image_megabytes(scaled, steps)
        result[f"dataset_x{scale}"] = {
            "peak_rss_mb": round(peak_rss_mb(scaled, steps, out / f"rss-x{scale}")),
            "decoded_images_mb": round(images_mb),
            "chunks_decoded_by_the_run_mb": round(decoded_mb),
            "chunk_cache_mb_per_process": round(cache_mb),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="the checkpoint row's rate, steps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every measurement")
    parser.add_argument("--rss-steps", type=int, default=60, help="training steps of each peak-RSS run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--skip-rss", action="store_true", help="leave out the peak-RSS runs")
    which.add_argument("--rss-only", action="store_true", help="only the peak-RSS runs")
    args = parser.parse_args()
    if args.checkpoint_every <= WARMUP_STEPS:
        parser.error(f"--checkpoint-every must be more than the {WARMUP_STEPS} warm-up steps")
    import torch

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the `lbm train` processes of the RSS runs
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["LBM_DATA_DIR"] = str(tmp / "data")
        scaled = {scale: overrides_for(args.size, tmp / "data", scale) for scale in (1, 8)}
        base = scaled[1]
        # Make the datasets first so that generating them is not measured.
        from lbm.train.compose import compose_config
        from lbm.train.distributed import Distributed
        from lbm.train.trainer import prepare_dataset

        for overrides in scaled.values() if not args.skip_rss else [base]:
            prepare_dataset(compose_config(TINY, overrides).task, Distributed())
        cfg = compose_config(TINY, base)
        result = {
            "size": args.size,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "threads": args.threads,
            "loader_workers": cfg.dataloader.num_workers,
        }
        if not args.rss_only:
            epoch, batch = steps_per_epoch(base), cfg.dataloader.batch_size
            rounds = []
            for r in range(args.rounds):
                rounds.append(measure_round(base, args.checkpoint_every, epoch, tmp / f"round-{r}", batch))
                print(json.dumps({"round": r, **rounds[-1]}), file=sys.stderr, flush=True)
            result |= throughput(rounds, cfg, epoch, args.checkpoint_every)
        if not args.skip_rss:
            result |= memory(scaled, args.rss_steps, cfg, tmp)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
