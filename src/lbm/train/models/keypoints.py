"""Image encoders that keep where things are: feature maps reduced to keypoints by a spatial softmax.

A global average pool discards the position of what a camera sees, which a policy that must move to it
needs; the spatial soft-argmax of Finn et al. (2016, "Deep Spatial Autoencoders for Visuomotor
Learning"), as robomimic and diffusion_policy use it, returns it instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lbm.errors import LbmError
from lbm.train.models.vision import CLIP_OPTIONS, RESNET_OPTIONS


class SpatialSoftmax(nn.Module):
    """Feature maps [B, C, H, W] -> keypoints [B, 2 * num_keypoints].

    A 1x1 convolution makes `num_keypoints` maps; each keypoint is the expected (x, y) in [-1, 1] under the
    softmax of its map (x along the columns, y along the rows), with a learned temperature.
    """

    def __init__(self, in_channels: int, num_keypoints: int = 32) -> None:
        super().__init__()
        self.project = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.output_dim = 2 * num_keypoints

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.project(features)
        height, width = maps.shape[-2:]
        weights = torch.softmax(maps.flatten(2) / self.log_temperature.exp(), dim=-1)  # [B, K, H * W]
        ys = torch.linspace(-1.0, 1.0, height, device=maps.device, dtype=weights.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=maps.device, dtype=weights.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        x = weights @ grid_x.reshape(-1, 1)
        y = weights @ grid_y.reshape(-1, 1)
        return torch.cat([x, y], dim=-1).flatten(1)


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.GroupNorm(max(out_channels // 16, 1), out_channels),
        nn.Mish(),
    )


class KeypointConvEncoder(nn.Module):
    """A small CNN for small images, then a spatial softmax: [B, 3, H, W] in [0, 1] -> [B, output_dim].

    The first block halves the resolution, the others keep it, so a 28x28 crop gives 14x14 maps;
    output_dim = 2 * num_keypoints. With `condition_dim` > 0, forward(images, condition [B, condition_dim])
    scales and shifts the last feature maps per channel by the condition (FiLM, as RT-1 conditions its image
    encoder on the instruction), so the keypoints can be those of what the instruction names; the FiLM
    starts as the identity.
    """

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = (32, 64),
        num_keypoints: int = 32,
        condition_dim: int = 0,
    ) -> None:
        super().__init__()
        widths = [3, *(int(c) for c in channels)]
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.trunk = nn.Sequential(
            *(_conv_block(c_in, c_out, 2 if i == 0 else 1) for i, (c_in, c_out) in enumerate(pairs))
        )
        self.keypoints = SpatialSoftmax(widths[-1], num_keypoints)
        self.output_dim = self.keypoints.output_dim
        self.condition_dim = condition_dim
        self.film = nn.Linear(condition_dim, 2 * widths[-1]) if condition_dim else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        features = self.trunk(images * 2 - 1)
        if self.film is not None:
            if condition is None:
                raise ValueError("this encoder is conditioned: pass condition [B, condition_dim]")
            scale, bias = self.film(condition.to(features.dtype))[..., None, None].chunk(2, dim=1)
            features = features * (1 + scale) + bias
        return self.keypoints(features)


def get_keypoint_cnn(
    channels: tuple[int, ...] | list[int] = (32, 64),
    num_keypoints: int = 32,
    condition_dim: int = 0,
    **other_options: Any,
) -> KeypointConvEncoder:
    """A KeypointConvEncoder trained from scratch.

    The options of get_resnet and get_clip_vit_base_patch16 (a config node that switches `_target_` keeps
    them) are ignored, except asking for pretrained weights, which it has none of; any other option is an
    LbmError.
    """
    pretrained = {k: v for k, v in other_options.items() if k in ("weights", "pretrained") and v}
    if pretrained:
        asked = ", ".join(f"{k}={v}" for k, v in pretrained.items())
        raise LbmError(
            f"get_keypoint_cnn has no pretrained weights ({asked}): use _target_: "
            "lbm.train.models.vision.get_resnet for a pretrained ResNet, or weights: null"
        )
    unknown = sorted(set(other_options) - {*RESNET_OPTIONS, *CLIP_OPTIONS})
    if unknown:
        raise LbmError(
            f"get_keypoint_cnn has no option {', '.join(unknown)}: use channels, num_keypoints, condition_dim"
        )
    if not channels or num_keypoints < 1 or condition_dim < 0:
        raise LbmError(
            f"get_keypoint_cnn needs channels (got {list(channels)}), num_keypoints >= 1 (got "
            f"{num_keypoints}) and condition_dim >= 0 (got {condition_dim})"
        )
    return KeypointConvEncoder(channels, num_keypoints, condition_dim)
