"""Conditional 1-D UNet that predicts the noise (or the clean sample) of an action sequence."""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from lbm.errors import LbmError


def _conv_block(in_channels: int, out_channels: int, kernel_size: int, n_groups: int) -> nn.Sequential:
    """Conv1d → GroupNorm → Mish, length-preserving: [B, in_channels, T] → [B, out_channels, T]."""
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.GroupNorm(n_groups, out_channels),
        nn.Mish(),
    )


class FiLMResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM conditioning between them and a residual connection.

    forward(x [B, in_channels, T], cond [B, cond_dim]) -> [B, out_channels, T]. The condition gives a
    per-channel scale and bias (`cond_predict_scale`) or a per-channel bias only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_dim: int,
        kernel_size: int,
        n_groups: int,
        cond_predict_scale: bool,
    ) -> None:
        super().__init__()
        self.conv_in = _conv_block(in_channels, out_channels, kernel_size, n_groups)
        self.conv_out = _conv_block(out_channels, out_channels, kernel_size, n_groups)
        self.cond_predict_scale = cond_predict_scale
        film_dim = 2 * out_channels if cond_predict_scale else out_channels
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, film_dim))
        self.residual = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.conv_in(x)
        film = self.film(cond).unsqueeze(-1)
        if self.cond_predict_scale:
            scale, bias = film.chunk(2, dim=1)
            out = scale * out + bias
        else:
            out = out + film
        return self.conv_out(out) + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """UNet over time for action sequences, conditioned by FiLM on the diffusion step and a global vector.

    forward(sample [B, T, input_dim], timestep [B] or scalar, global_cond [B, global_cond_dim])
    -> [B, T, input_dim]. Each of `down_dims` is one resolution level; T is halved between levels, so T must
    be a multiple of `horizon_multiple` = 2 ** (len(down_dims) - 1).
    """

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int,
        diffusion_step_embed_dim: int = 128,
        down_dims: tuple[int, ...] | list[int] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        cond_predict_scale: bool = True,
        *,
        horizon: int | None = None,
    ) -> None:
        super().__init__()
        down_dims = [int(d) for d in down_dims]
        _check_shape(down_dims, n_groups, kernel_size, diffusion_step_embed_dim)
        self.horizon_multiple = 2 ** (len(down_dims) - 1)
        if horizon is not None and horizon % self.horizon_multiple:
            raise LbmError(
                f"horizon {horizon} does not fit a UNet with {len(down_dims)} levels "
                f"(down_dims {down_dims}): the horizon must be a multiple of {self.horizon_multiple}"
            )
        self.step_embedding = nn.Sequential(
            Timesteps(diffusion_step_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0),
            TimestepEmbedding(
                diffusion_step_embed_dim,
                4 * diffusion_step_embed_dim,
                act_fn="mish",
                out_dim=diffusion_step_embed_dim,
            ),
        )
        cond_dim = diffusion_step_embed_dim + global_cond_dim

        def block(in_channels: int, out_channels: int) -> FiLMResidualBlock1D:
            return FiLMResidualBlock1D(
                in_channels, out_channels, cond_dim, kernel_size, n_groups, cond_predict_scale
            )

        levels = list(zip([input_dim, *down_dims[:-1]], down_dims, strict=True))
        self.down = nn.ModuleList(
            nn.ModuleList([block(c_in, c_out), block(c_out, c_out)]) for c_in, c_out in levels
        )
        self.downsample = nn.ModuleList(nn.Conv1d(c, c, 3, stride=2, padding=1) for c in down_dims[:-1])
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        # Up level i brings the deeper level's features (down_dims[i + 1]) back to the resolution of down
        # level i and merges them with that level's skip features (down_dims[i]).
        self.upsample = nn.ModuleList(nn.ConvTranspose1d(c, c, 4, stride=2, padding=1) for c in down_dims[1:])
        self.up = nn.ModuleList(
            nn.ModuleList([block(c_deep + c_skip, c_skip), block(c_skip, c_skip)])
            for c_skip, c_deep in zip(down_dims[:-1], down_dims[1:], strict=True)
        )
        self.head = nn.Sequential(
            _conv_block(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], input_dim, 1),
        )

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, global_cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, length = sample.shape[0], sample.shape[1]
        if length % self.horizon_multiple:
            raise ValueError(f"sequence length {length} is not a multiple of {self.horizon_multiple}")
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        cond = self.step_embedding(timestep)
        if global_cond is not None:
            cond = torch.cat([cond, global_cond.to(cond.dtype)], dim=-1)

        x = sample.transpose(1, 2)
        skips = []
        for level, (first, second) in enumerate(self.down):
            x = second(first(x, cond), cond)
            if level < len(self.downsample):
                skips.append(x)
                x = self.downsample[level](x)
        for mid_block in self.mid:
            x = mid_block(x, cond)
        for level in reversed(range(len(self.up))):
            first, second = self.up[level]
            x = torch.cat([self.upsample[level](x), skips[level]], dim=1)
            x = second(first(x, cond), cond)
        return self.head(x).transpose(1, 2)


def _check_shape(down_dims: list[int], n_groups: int, kernel_size: int, step_embed_dim: int) -> None:
    if not down_dims:
        raise LbmError("down_dims is empty: give at least one channel count, e.g. [256, 512, 1024]")
    odd = [d for d in down_dims if d % n_groups]
    if odd:
        raise LbmError(
            f"down_dims {down_dims}: every entry must be a multiple of n_groups={n_groups} ({odd} not)"
        )
    if kernel_size % 2 == 0:
        raise LbmError(f"kernel_size {kernel_size} must be odd (e.g. 5) so sequences keep their length")
    if step_embed_dim % 2:
        raise LbmError(f"diffusion_step_embed_dim {step_embed_dim} must be even (e.g. 128)")
