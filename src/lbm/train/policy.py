"""Language-conditioned diffusion policy: a 1-D UNet denoises action sequences, conditioned on the encoded
observation history and the task instruction."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from lbm.errors import LbmError
from lbm.train.config.schema import INFERENCE_SCHEDULERS, PREDICTION_TYPES
from lbm.train.models.unet1d import ConditionalUnet1D
from lbm.train.normalizer import LinearNormalizer
from lbm.train.sample_generators import SampleGenerators


class DiffusionUnetLangPolicy(nn.Module):
    """Predicts `horizon` actions [B, horizon, A] from `n_obs_steps` observations and an instruction.

    Submodules: `text_encoder` (instructions -> [B, text_encoder.output_dim]), `obs_encoder` (observation
    dict, and the instruction features for image models conditioned on them -> [B,
    obs_encoder.output_dim(n_obs_steps)]), `model` (the ConditionalUnet1D, whose global condition is both
    features concatenated) and `normalizer` (action and low-dim stats).
    Training adds noise with `noise_scheduler` (DDPM) and regresses its prediction_type target; sampling runs
    `num_inference_steps` (default: the training timesteps) of DDIM, or of DDPM with
    inference_scheduler="ddpm".
    """

    def __init__(
        self,
        shape_meta: Mapping,
        obs_encoder: nn.Module,
        text_encoder: nn.Module,
        noise_scheduler: DDPMScheduler,
        horizon: int,
        n_action_steps: int,
        n_obs_steps: int,
        num_inference_steps: int | None = None,
        inference_scheduler: str = "ddim",
        diffusion_step_embed_dim: int = 128,
        down_dims: tuple[int, ...] | list[int] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        cond_predict_scale: bool = True,
    ) -> None:
        super().__init__()
        if n_obs_steps < 1 or n_action_steps < 1 or n_obs_steps - 1 + n_action_steps > horizon:
            raise LbmError(
                f"horizon {horizon} cannot hold n_obs_steps {n_obs_steps} and n_action_steps "
                f"{n_action_steps}: both must be >= 1 and n_obs_steps - 1 + n_action_steps <= horizon"
            )
        prediction_type = noise_scheduler.config.prediction_type
        if prediction_type not in PREDICTION_TYPES:
            raise LbmError(
                f"noise_scheduler.prediction_type {prediction_type!r} is not supported: use one of "
                f"{', '.join(PREDICTION_TYPES)}"
            )
        if inference_scheduler not in INFERENCE_SCHEDULERS:
            raise LbmError(
                f"inference_scheduler {inference_scheduler!r} is not known: use one of "
                f"{', '.join(INFERENCE_SCHEDULERS)}"
            )
        train_timesteps = noise_scheduler.config.num_train_timesteps
        num_inference_steps = train_timesteps if num_inference_steps is None else num_inference_steps
        if not 1 <= num_inference_steps <= train_timesteps:
            raise LbmError(
                f"num_inference_steps {num_inference_steps} must be between 1 and the scheduler's "
                f"num_train_timesteps {train_timesteps}"
            )
        self.action_dim = math.prod(shape_meta["action"]["shape"])
        self.low_dim_keys = sorted(
            key for key, meta in shape_meta["obs"].items() if meta.get("type") == "low_dim"
        )
        self.horizon = horizon
        self.n_action_steps = n_action_steps
        self.n_obs_steps = n_obs_steps
        self.num_inference_steps = num_inference_steps
        self.noise_scheduler = noise_scheduler
        self.inference_scheduler = (
            DDIMScheduler.from_config(noise_scheduler.config)
            if inference_scheduler == "ddim"
            else copy.deepcopy(noise_scheduler)
        )
        self.obs_encoder = obs_encoder
        self.text_encoder = text_encoder
        self.model = ConditionalUnet1D(
            input_dim=self.action_dim,
            global_cond_dim=obs_encoder.output_dim(n_obs_steps) + text_encoder.output_dim,
            diffusion_step_embed_dim=diffusion_step_embed_dim,
            down_dims=down_dims,
            kernel_size=kernel_size,
            n_groups=n_groups,
            cond_predict_scale=cond_predict_scale,
            horizon=horizon,
        )
        self.normalizer = LinearNormalizer()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def set_normalizer(self, stats: Mapping[str, Mapping[str, Any]]) -> None:
        """Use the dataset's {key: {"min": array, "max": array}} stats (e.g. "action", "agent_pos")."""
        self.normalizer.set_stats(stats)

    def global_cond(
        self,
        obs: Mapping[str, torch.Tensor],
        instructions: list[str],
        generators: SampleGenerators | None = None,
    ) -> torch.Tensor:
        """Features of the first n_obs_steps observation steps and of the instructions: [B, global_cond_dim].

        Low-dim observations must already be normalized; images are uint8 [B, >=n_obs_steps, 3, H, W];
        random crops come from `generators` when given.
        """
        batch = next(iter(obs.values())).shape[0]
        if len(instructions) != batch:
            raise ValueError(f"{len(instructions)} instructions for a batch of {batch} observations")
        device = self.device
        obs = {key: value[:, : self.n_obs_steps].to(device, non_blocking=True) for key, value in obs.items()}
        text_features = self.text_encoder(instructions, device)
        obs_features = self.obs_encoder(obs, condition=text_features, generators=generators)
        return torch.cat([obs_features, text_features.to(obs_features.dtype)], dim=-1)

    def compute_loss(
        self, batch: Mapping[str, Any], generators: SampleGenerators | None = None
    ) -> torch.Tensor:
        """Denoising loss (mean squared error) of one dataset batch.

        batch: {"obs": {low-dim key: normalized [B, n_obs_steps, D], rgb key: uint8 [B, n_obs_steps, 3, H,
        W]}, "action": normalized [B, horizon, A], "instruction": list of B strings}. Crops, noise and
        timesteps are drawn from `generators` (one per sample) when given, else from the global RNG.
        """
        global_cond = self.global_cond(batch["obs"], list(batch["instruction"]), generators)
        action = batch["action"].to(global_cond.device, non_blocking=True).float()
        train_timesteps = self.noise_scheduler.config.num_train_timesteps
        if generators is None:
            noise = torch.randn_like(action)
            timesteps = torch.randint(0, train_timesteps, (action.shape[0],), device=action.device)
        else:
            noise = generators.normal(action.shape[1:], action.device)
            timesteps = generators.integers(train_timesteps, (), action.device)
        noisy_action = self.noise_scheduler.add_noise(action, noise, timesteps)
        prediction = self.model(noisy_action, timesteps, global_cond)
        prediction_type = self.noise_scheduler.config.prediction_type
        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "sample":
            target = action
        else:
            target = self.noise_scheduler.get_velocity(action, noise, timesteps)
        return F.mse_loss(prediction.float(), target)

    @torch.no_grad()
    def predict_action(
        self,
        obs: Mapping[str, torch.Tensor],
        instructions: list[str],
        generator: torch.Generator | None = None,
        normalized: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Sample actions for B observations and instructions.

        obs: {rgb key: uint8 [B, >=n_obs_steps, 3, H, W], low-dim key: [B, >=n_obs_steps, D]}; low-dim values
        and the returned actions are in the normalizer's units when `normalized`, else in raw units.
        Returns {"action": [B, n_action_steps, A] (the steps after the last observation),
        "action_pred": [B, horizon, A]}. Call eval() first for deterministic image crops.
        """
        if not normalized:
            obs = dict(obs)
            for key in self.low_dim_keys:
                obs[key] = self.normalizer.normalize(key, obs[key].to(self.device))
        global_cond = self.global_cond(obs, list(instructions))
        device = global_cond.device
        scheduler = self.inference_scheduler
        scheduler.set_timesteps(self.num_inference_steps)  # timesteps stay on the CPU, as the schedules do
        shape = (global_cond.shape[0], self.horizon, self.action_dim)
        trajectory = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        for timestep in scheduler.timesteps:
            prediction = self.model(trajectory, timestep, global_cond).float()
            trajectory = scheduler.step(prediction, timestep, trajectory, generator=generator).prev_sample
        if not normalized:
            trajectory = self.normalizer.unnormalize("action", trajectory)
        start = self.n_obs_steps - 1
        return {"action": trajectory[:, start : start + self.n_action_steps], "action_pred": trajectory}
