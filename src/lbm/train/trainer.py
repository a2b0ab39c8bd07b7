"""The training loop of an LBM, readable top to bottom.

`Trainer(cfg, output_dir, artifact_uri)` builds the dataset, policy, EMA, optimizer and lr schedule;
`run()` resumes from the newest complete checkpoint if there is one, then trains: micro-batches
accumulated into optimizer steps, metrics every `training.log_every` steps, validation every
`training.val_every` epochs (or steps with `val_per_step`), checkpoints every `checkpoint.every_n_steps`
steps and at the end. Under torchrun it is one rank of a DDP job and only rank 0 logs and writes files.
Every random draw of a step derives from the seed, the epoch and the sample indices, so a run resumed from a
checkpoint takes the same steps as the uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from lbm.errors import LbmError
from lbm.storage import transfer
from lbm.storage.layout import CONFIG_FILE, METRICS_FILE
from lbm.train import checkpoint as ckpt
from lbm.train.compose import to_yaml
from lbm.train.data.replay_buffer import MissingReplayBuffer
from lbm.train.distributed import Distributed
from lbm.train.metrics import MetricsLog
from lbm.train.missing_dataset import missing_dataset_line
from lbm.train.resume import check_explicit, resume_checkpoint
from lbm.train.rollouts import TrainingRollouts, describe
from lbm.train.sample_generators import STEP_KEY, SampleGenerators, derived_seed
from lbm.train.sampler import EpochSampler
from lbm.train.wandb_run import check_logging_mode, start_wandb

log = logging.getLogger(__name__)

EXIT_STOPPED = 143


@dataclass
class Progress:
    """Where training is: optimizer steps taken, epoch in progress, micro-batches of it already used, and
    the losses of the micro-batches since the last logged step."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    val_loss: float | None = None
    unlogged_losses: list[float] = field(default_factory=list)


class LossModule(torch.nn.Module):
    """The policy's training loss as `forward`, so DistributedDataParallel sees the backward pass."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict, generators: SampleGenerators) -> torch.Tensor:
        return self.policy.compute_loss(batch, generators)


def build(node: DictConfig) -> Any:
    """`hydra.utils.instantiate`, letting a user error raised inside a constructor through as itself."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, _convert_="partial")
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, LbmError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LbmError(f"training.device={name!r} but this machine has no CUDA GPU (use auto or cpu)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def leave_process_group(worker_id: int) -> None:
    """A DataLoader worker leaves the trainer's process group, so a stop signal sent to the job's group
    reaches only the trainer, which stops at a step boundary; workers still end with the trainer."""
    os.setpgrp()


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to `device`; other values (instructions) as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def param_groups(policy: torch.nn.Module, base_lr: float, lr_scales: dict[str, float]) -> list[dict]:
    """Trainable parameters grouped by top-level module, each group's lr scaled by `lr_scales[module]`."""
    unknown = set(lr_scales) - {name for name, _ in policy.named_children()}
    if unknown:
        children = ", ".join(name for name, _ in policy.named_children())
        raise LbmError(
            f"training.lr_scale_for_grouped_params names {', '.join(sorted(unknown))}, "
            f"which the policy does not have (its modules: {children})"
        )
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, param in policy.named_parameters():
        if param.requires_grad:
            groups.setdefault(float(lr_scales.get(name.split(".")[0], 1.0)), []).append(param)
    return [{"params": params, "lr": base_lr * scale} for scale, params in groups.items()]


def prepare_dataset(task: DictConfig, dist: Distributed) -> None:
    """Generate the task's synthetic dataset where the config asks for one and it is not there yet."""
    from lbm.train.data.synthetic import write_synthetic_dataset

    synth = task.get("synthesize")
    if not synth:
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(task.dataset_path)
    if dist.is_main and not fs.exists(path):
        print(f"generating synthetic dataset at {task.dataset_path}", flush=True)
        try:
            write_synthetic_dataset(
                task.dataset_path,
                num_tasks=synth.tasks,
                episodes_per_task=synth.episodes_per_task,
                image_size=synth.image_size,
                seed=synth.seed,
            )
        except LbmError:
            if not fs.exists(path):
                raise
            # Another job wrote the same (deterministic) dataset first: use theirs.
    dist.barrier()


def mirror_written(uploader: transfer.BackgroundUploader, info: ckpt.CheckpointInfo) -> None:
    """Upload a new checkpoint, then its sidecar (which marks it complete)."""
    uploader.upload(info.path)
    uploader.upload(info.sidecar)


def mirror_removed(uploader: transfer.BackgroundUploader, path: Path) -> None:
    """Remove a pruned checkpoint and its sidecar from the artifact URL."""
    uploader.delete(path.name)
    uploader.delete(path.name + ckpt.SIDECAR_SUFFIX)


class Trainer:
    """One training run (one rank of it under torchrun)."""

    def __init__(self, cfg: DictConfig, output_dir: Path, artifact_uri: str | None = None):
        self.cfg = cfg
        self.output_dir = output_dir
        self.artifact_uri = artifact_uri
        self.training = cfg.training
        self.dist = Distributed.from_env()
        self.device = pick_device(self.training.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.dist.start(self.device)
        seed_everything(int(self.training.seed) + self.dist.rank)
        self.accumulate = int(self.training.gradient_accumulate_every)
        self.use_bf16 = self.device.type == "cuda" and self.training.get("mixed_precision") == "bf16"
        self._stop_requested = False
        self._uploader: transfer.BackgroundUploader | None = None
        self._last_saved: tuple[int, float | None] | None = None

        check_explicit(self.training)
        check_logging_mode(cfg.logging)
        # Model first: a missing pretrained weight is a user error that must come before any data is made.
        self.policy = build(cfg.policy)
        self.rollouts = TrainingRollouts.from_config(cfg)
        self.monitor_key, self.monitor_mode = ckpt.check_monitor(cfg.checkpoint, self.rollouts is not None)
        self._scores: dict[str, float] = {}
        prepare_dataset(cfg.task, self.dist)
        try:
            self.dataset = build(cfg.task.dataset)
        except MissingReplayBuffer as missing:
            task = OmegaConf.to_container(cfg.task, resolve=True)
            raise LbmError(missing_dataset_line(task, missing.url)) from None
        self.val_dataset = self.dataset.get_validation_dataset()
        self.policy.set_normalizer(self.dataset.normalizer_stats())
        self.policy.to(self.device)
        self.ema_policy, self.ema = self._build_ema()
        self.optimizer = self._build_optimizer()
        self.sampler, self.train_loader, self.val_loader = self._build_loaders()
        self.steps_per_epoch = len(self.sampler) // cfg.dataloader.batch_size // self.accumulate
        if self.steps_per_epoch == 0:
            raise LbmError(
                f"the training split has {len(self.dataset)} samples per epoch, fewer than one step of "
                f"dataloader.batch_size={cfg.dataloader.batch_size} x {self.accumulate} micro-batches x "
                f"{self.dist.world_size} processes: lower the batch size or use more data"
            )
        self.total_steps = int(self.training.num_epochs) * self.steps_per_epoch
        if self.training.get("max_train_steps"):
            self.total_steps = min(self.total_steps, int(self.training.max_train_steps))
        from diffusers.optimization import get_scheduler

        self.lr_scheduler = get_scheduler(
            self.training.lr_scheduler,
            optimizer=self.optimizer,
            num_warmup_steps=int(self.training.lr_warmup_steps),
            num_training_steps=self.total_steps,
        )
        self.model = LossModule(self.policy)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)
        self.progress = Progress()

    # ---- construction -------------------------------------------------------------------------------

    def _build_ema(self) -> tuple[torch.nn.Module | None, Any | None]:
        if not self.training.get("use_ema", True):
            return None, None
        from diffusers.training_utils import EMAModel

        e = self.cfg.ema
        ema = EMAModel(
            self.policy.parameters(),
            decay=e.max_value,
            min_decay=e.min_value,
            update_after_step=e.update_after_step,
            use_ema_warmup=True,
            inv_gamma=e.inv_gamma,
            power=e.power,
        )
        ema_policy = copy.deepcopy(self.policy).eval().requires_grad_(False)
        return ema_policy, ema

    def _build_optimizer(self) -> torch.optim.Optimizer:
        options = OmegaConf.to_container(self.cfg.optimizer, resolve=True)
        optimizer_class = get_class(options.pop("_target_"))
        scales = OmegaConf.to_container(self.training.lr_scale_for_grouped_params or {}, resolve=True)
        return optimizer_class(param_groups(self.policy, float(options.pop("lr")), scales), **options)

    def _build_loaders(self) -> tuple[EpochSampler, DataLoader, DataLoader]:
        d, v = self.cfg.dataloader, self.cfg.val_dataloader
        sampler = EpochSampler(
            len(self.dataset),
            seed=int(self.training.seed),
            shuffle=d.shuffle,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        common = {
            "pin_memory": d.pin_memory and self.device.type == "cuda",
            "worker_init_fn": leave_process_group,
        }
        train_loader = DataLoader(
            self.dataset,
            batch_size=d.batch_size,
            sampler=sampler,
            num_workers=d.num_workers,
            persistent_workers=d.persistent_workers and d.num_workers > 0,
            drop_last=True,
            **common,
        )
        val_sampler = EpochSampler(
            len(self.val_dataset), seed=0, shuffle=False, rank=self.dist.rank, world_size=self.dist.world_size
        )
        val_loader = DataLoader(
            self.val_dataset,
            batch_size=v.batch_size,
            sampler=val_sampler,
            num_workers=v.num_workers,
            persistent_workers=v.persistent_workers and v.num_workers > 0,
            **common,
        )
        return sampler, train_loader, val_loader

    # ---- one step -----------------------------------------------------------------------------------

    def autocast(self):
        if self.use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def micro_step(self, batch: dict, last_of_step: bool) -> float:
        """Forward and backward of one micro-batch; gradients sync across ranks on the step's last one.

        Its random draws depend only on the seed, the epoch and the micro-batch (the global RNG, for any
        module that draws from it, such as dropout) or its samples' indices (crops, noise, timesteps).
        """
        p, seed = self.progress, int(self.training.seed)
        torch.manual_seed(derived_seed(STEP_KEY, seed, self.dist.rank, p.epoch, p.batches_in_epoch))
        generators = SampleGenerators(seed, p.epoch, batch["index"].tolist())
        sync = nullcontext() if last_of_step or not self.dist.enabled else self.model.no_sync()
        with sync:
            with self.autocast():
                loss = self.model(to_device(batch, self.device), generators)
            (loss / self.accumulate).backward()
        return loss.item()

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.policy.parameters())
        self.progress.step += 1

    # ---- validation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """val_loss over the held-out episodes and the action MSE of sampled trajectories on one batch."""
        self.policy.eval()
        results: dict[str, float] = {}
        max_batches = self.training.get("max_val_batches")
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(int(self.training.seed))
            total, count, first_batch = 0.0, 0, None
            for i, batch in enumerate(self.val_loader):
                if max_batches is not None and i >= max_batches:
                    break
                first_batch = first_batch if first_batch is not None else batch
                with self.autocast():
                    loss = self.policy.compute_loss(to_device(batch, self.device))
                size = batch["action"].shape[0]
                total, count = total + loss.item() * size, count + size
            results["val_loss"] = self.dist.mean(total, count)
            if first_batch is not None and self._sampling_due():
                results["val_action_mse"] = self._sampled_action_mse(first_batch)
        self.policy.train()
        return results

    def _sampling_due(self) -> bool:
        every = int(self.training.get("sample_every") or 0)
        return every > 0 and (self.progress.epoch % every == 0 or self.progress.step >= self.total_steps)

    def _acting_policy(self) -> torch.nn.Module:
        """The policy that acts: the EMA copy brought up to date when there is one, else the policy."""
        if self.ema is None:
            return self.policy
        self.ema.copy_to(self.ema_policy.parameters())
        for ema_buffer, buffer in zip(self.ema_policy.buffers(), self.policy.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        return self.ema_policy

    def _sampled_action_mse(self, batch: dict) -> float:
        policy = self._acting_policy()
        batch = to_device(batch, self.device)
        with self.autocast():
            predicted = policy.predict_action(batch["obs"], batch["instruction"], normalized=True)[
                "action_pred"
            ]
        return torch.nn.functional.mse_loss(predicted.float(), batch["action"].float()).item()

    # ---- checkpoints --------------------------------------------------------------------------------

    def checkpoint_state(self) -> dict:
        """Everything needed to continue this run exactly, copied so training can go on meanwhile."""
        return ckpt.snapshot(
            {
                "step": self.progress.step,
                "epoch": self.progress.epoch,
                "batches_in_epoch": self.progress.batches_in_epoch,
                "val_loss": self.progress.val_loss,
                "unlogged_losses": list(self.progress.unlogged_losses),
                "model": self.policy.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.lr_scheduler.state_dict(),
                "config": to_yaml(self.cfg),
            }
        )

    def load_state(self, state: dict) -> None:
        self.policy.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.progress = Progress(
            state["step"],
            state["epoch"],
            state["batches_in_epoch"],
            state.get("val_loss"),
            list(state.get("unlogged_losses", [])),
        )

    # ---- the run ------------------------------------------------------------------------------------

    def _request_stop(self, signum, frame) -> None:
        self._stop_requested = True

    def run(self) -> int:
        """Train to the end (or until SIGTERM); return the process exit status."""
        main = self.dist.is_main
        uploader = transfer.BackgroundUploader(self.artifact_uri) if (main and self.artifact_uri) else None
        self._uploader = uploader
        metrics, wandb_run, keeper = None, None, None
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / CONFIG_FILE).write_text(to_yaml(self.cfg))
            if uploader:
                uploader.upload(self.output_dir / CONFIG_FILE)
            wandb_run = start_wandb(self.cfg, self.output_dir)
            metrics = MetricsLog(self.output_dir / METRICS_FILE, wandb_run)
            keeper = ckpt.CheckpointKeeper(
                self.output_dir,
                int(self.cfg.checkpoint.topk),
                monitor_key=self.monitor_key,
                mode=self.monitor_mode,
            )
            if uploader is not None:
                keeper.on_written = lambda info: mirror_written(uploader, info)
                keeper.on_removed = lambda path: mirror_removed(uploader, path)
        self.dist.barrier()
        resume = resume_checkpoint(self.training, self.output_dir, self.artifact_uri)
        if resume is not None:
            path, sha = resume
            self.load_state(ckpt.load_checkpoint(path, sha))
            if main:
                print(f"resuming from {path.name} at step {self.progress.step}", flush=True)
                metrics.truncate_after(self.progress.step)
        signal.signal(signal.SIGTERM, self._request_stop)
        try:
            stopped = self._train_loop(metrics, keeper)
        finally:
            if keeper is not None:
                keeper.wait()
            if uploader is not None:
                uploader.upload(self.output_dir / METRICS_FILE)
                uploader.close()
            if wandb_run is not None:
                wandb_run.finish()
            self.dist.stop()
        if main:
            where = self.artifact_uri or self.output_dir
            print(
                f"{'stopped' if stopped else 'finished'} at step {self.progress.step}; checkpoints in {where}"
            )
        return EXIT_STOPPED if stopped else 0

    def _train_loop(self, metrics: MetricsLog | None, keeper: ckpt.CheckpointKeeper | None) -> bool:
        """Train until the last step; True when stopped early by a signal."""
        cfg, p = self.cfg, self.progress
        batch_size = cfg.dataloader.batch_size
        batches_per_epoch = self.steps_per_epoch * self.accumulate
        log_every = int(self.training.log_every)
        val_every = int(self.training.val_every)
        every_n_steps = int(cfg.checkpoint.every_n_steps)
        window = _Window()
        self.policy.train()
        while p.step < self.total_steps:
            self.sampler.set_epoch(p.epoch, skip=p.batches_in_epoch * batch_size)
            batches = iter(self.train_loader)
            epoch_ended = False
            while not epoch_ended and p.step < self.total_steps:
                window.begin_wait()
                batch = next(batches)
                window.end_wait(batch_size * self.dist.world_size)
                p.batches_in_epoch += 1
                last_of_step = p.batches_in_epoch % self.accumulate == 0
                p.unlogged_losses.append(self.micro_step(batch, last_of_step))
                if not last_of_step:
                    continue
                self.optimizer_step()
                if p.batches_in_epoch >= batches_per_epoch:
                    p.epoch, p.batches_in_epoch, epoch_ended = p.epoch + 1, 0, True
                if self.training.val_per_step:
                    validate = p.step % val_every == 0
                else:
                    validate = epoch_ended and p.epoch % val_every == 0
                rollout = self.rollouts is not None and self.rollouts.due(
                    p.epoch, epoch_ended, p.step >= self.total_steps
                )
                if validate or rollout or p.step % log_every == 0:
                    record = self._train_record(window)
                    if validate:
                        record.update(self._validated())
                    if rollout and metrics is not None:
                        record.update(self._rolled_out(metrics))
                    if metrics is not None:
                        self._log(metrics, record)
                if self.dist.any(self._stop_requested):
                    self._save(keeper)
                    return True
                if p.step % every_n_steps == 0:
                    self._save(keeper)
        if self._last_saved != (p.step, p.val_loss):
            self._save(keeper)
        return False

    def _validated(self) -> dict[str, float]:
        results = self.validate()
        self.progress.val_loss = results["val_loss"]
        return results

    def _rolled_out(self, metrics: MetricsLog) -> dict[str, float]:
        """Rollouts of the acting policy (on rank 0): their metrics, a line for people, and the recorded
        episodes as GIFs in `rollouts/step_<S>/` of the output dir, also logged to W&B."""
        from lbm.envs.video import write_episode_gifs

        evaluation = self.rollouts.run(self._acting_policy())
        self.policy.train()
        print(describe(evaluation, self.progress.step), flush=True)
        gifs = write_episode_gifs(
            evaluation.episodes, self.output_dir / "rollouts" / f"step_{self.progress.step}"
        )
        if metrics.wandb_run is not None and gifs:
            import wandb

            videos = {f"test_video_{j}": wandb.Video(str(path), format="gif") for j, path in enumerate(gifs)}
            metrics.wandb_run.log(videos, step=self.progress.step)
        self._scores = evaluation.metrics()
        return self._scores

    def _train_record(self, window: _Window) -> dict[str, Any]:
        """The step's record: mean train_loss of the micro-batches since the last one, lr, throughput."""
        p = self.progress
        record: dict[str, Any] = {"step": p.step, "epoch": p.epoch}
        if p.unlogged_losses:
            record["train_loss"] = sum(p.unlogged_losses) / len(p.unlogged_losses)
            p.unlogged_losses = []
        group = self.optimizer.param_groups[0]
        record["lr"] = float(self.cfg.optimizer.lr) * group["lr"] / group["initial_lr"]
        record.update(window.take())
        return record

    def _log(self, metrics: MetricsLog, record: dict[str, Any]) -> None:
        metrics.log(record)
        if self._uploader is not None:
            # Watchers of the artifact folder (a sweep's hyperband) see the metrics while the run goes on.
            self._uploader.upload(metrics.path)
        done = self.progress.step / self.total_steps
        epochs = self.training.num_epochs
        rate = record.get("samples_per_s") or 0.0
        steps_left = self.total_steps - self.progress.step
        batch = self.cfg.dataloader.batch_size * self.accumulate * self.dist.world_size
        eta = steps_left * batch / rate if rate else math.nan
        print(
            f"[progress] epoch {min(self.progress.epoch + 1, epochs)}/{epochs} "
            f"step {self.progress.step}/{self.total_steps} ({done:.0%}) eta {_duration(eta)}",
            flush=True,
        )

    def _save(self, keeper: ckpt.CheckpointKeeper | None) -> None:
        self._last_saved = (self.progress.step, self.progress.val_loss)
        if keeper is not None:
            monitored = {"val_loss": self.progress.val_loss, **self._scores}.get(self.monitor_key)
            keeper.save(self.checkpoint_state(), self.progress.val_loss, monitored)


class _Window:
    """Throughput and the fraction of time spent waiting for data, since the last `take()`."""

    def __init__(self):
        self._wait_start = 0.0
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.waited = 0.0
        self.samples = 0

    def begin_wait(self) -> None:
        self._wait_start = time.perf_counter()

    def end_wait(self, samples: int) -> None:
        self.waited += time.perf_counter() - self._wait_start
        self.samples += samples

    def take(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        stats = {"samples_per_s": self.samples / elapsed, "data_wait_frac": self.waited / elapsed}
        self.reset()
        return stats


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"
