"""Encoder of a multi-camera, multi-sensor observation into one conditioning vector per sample."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn
from torchvision.transforms import v2

from lbm.errors import LbmError
from lbm.train.sample_generators import SampleGenerators


def random_crop(
    images: torch.Tensor, height: int, width: int, generators: SampleGenerators | None = None
) -> torch.Tensor:
    """An independent random crop of each image: [N, C, H, W] -> [N, C, height, width].

    With `generators` (B of them, N = B * T images in sample order), sample b's T crops come from its own
    generator; without, from the global RNG.
    """
    n, _, h, w = images.shape
    device = images.device
    if generators is None:
        top = torch.randint(0, h - height + 1, (n,), device=device)
        left = torch.randint(0, w - width + 1, (n,), device=device)
    else:
        steps = n // len(generators)
        top = generators.integers(h - height + 1, (steps,), device).reshape(n)
        left = generators.integers(w - width + 1, (steps,), device).reshape(n)
    rows = top.view(n, 1, 1) + torch.arange(height, device=device).view(1, height, 1)
    cols = left.view(n, 1, 1) + torch.arange(width, device=device).view(1, 1, width)
    batch = torch.arange(n, device=device).view(n, 1, 1)
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def batch_norm_to_group_norm(module: nn.Module) -> None:
    """Replace, in place, every BatchNorm2d of `module` by a GroupNorm with 16 channels per group."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(max(child.num_features // 16, 1), child.num_features))
        else:
            batch_norm_to_group_norm(child)


class MultiImageObsEncoder(nn.Module):
    """Observation dict -> features [B, T * step_dim].

    Inputs, per key of shape_meta["obs"]: type "rgb" images uint8 [B, T, 3, H, W] (or float in [0, 1]),
    type "low_dim" float [B, T, *shape]. Each camera's images are resized to `resize_shape`, cropped to
    `crop_shape` (a random crop per image in training mode when `random_crop`, else the centre crop),
    converted to float on their device and encoded by the camera's rgb model (one shared model, one model per
    camera given as a dict, or deep copies of one model). Per time step the features are the cameras' (in key
    order) then the low-dim values (in key order); `step_dim` is their total size, output_dim(T) = T *
    step_dim. `use_group_norm` replaces the rgb models' BatchNorm by GroupNorm.
    """

    def __init__(
        self,
        shape_meta: Mapping,
        rgb_model: nn.Module | Mapping[str, nn.Module],
        resize_shape: list[int] | None = None,
        crop_shape: list[int] | None = None,
        random_crop: bool = True,
        share_rgb_model: bool = False,
        use_group_norm: bool = False,
    ) -> None:
        super().__init__()
        obs_meta = shape_meta["obs"]
        kinds = {key: meta.get("type") for key, meta in obs_meta.items()}
        unknown = {key: kind for key, kind in kinds.items() if kind not in ("rgb", "low_dim")}
        if unknown:
            raise LbmError(f"shape_meta.obs has keys of unknown type {unknown}: use type rgb or low_dim")
        self.rgb_keys = sorted(key for key, meta in obs_meta.items() if meta["type"] == "rgb")
        self.low_dim_keys = sorted(key for key, meta in obs_meta.items() if meta["type"] == "low_dim")
        self.low_dim_sizes = {key: math.prod(obs_meta[key]["shape"]) for key in self.low_dim_keys}
        self.random_crop = random_crop
        self.share_rgb_model = share_rgb_model

        image_shapes = self._image_shapes(obs_meta, resize_shape, crop_shape)
        self.resize = v2.Resize(list(resize_shape), antialias=True) if resize_shape else nn.Identity()
        self.crop_shape = list(crop_shape) if crop_shape else None
        self.center_crop = v2.CenterCrop(list(crop_shape)) if crop_shape else nn.Identity()

        self.rgb_models = nn.ModuleDict(self._rgb_models(rgb_model))
        if use_group_norm:
            batch_norm_to_group_norm(self.rgb_models)
        self.rgb_feature_dims = {
            key: _feature_dim(self._rgb_model(key), image_shapes[key]) for key in self.rgb_keys
        }
        self.step_dim = sum(self.rgb_feature_dims.values()) + sum(self.low_dim_sizes.values())

    def output_dim(self, n_obs_steps: int) -> int:
        """Size of the features of `n_obs_steps` observation steps."""
        return n_obs_steps * self.step_dim

    def forward(
        self,
        obs: Mapping[str, torch.Tensor],
        condition: torch.Tensor | None = None,
        generators: SampleGenerators | None = None,
    ) -> torch.Tensor:
        """Features of `obs`. `condition` [B, D] (the instruction's features) goes to the rgb models that take
        one (those with a `condition_dim` > 0), repeated for each of their images; random crops are drawn from
        `generators` (one per sample) when given."""
        missing = [key for key in (*self.rgb_keys, *self.low_dim_keys) if key not in obs]
        if missing:
            raise LbmError(f"observation lacks keys {missing} of shape_meta.obs (it has {sorted(obs)})")
        batch, steps = obs[(*self.rgb_keys, *self.low_dim_keys)[0]].shape[:2]
        images = [self._preprocess(obs[key].flatten(0, 1), generators) for key in self.rgb_keys]
        if self.share_rgb_model and images:
            model = self.rgb_models["shared"]
            features = list(self._encode(model, torch.cat(images), condition, steps).split(batch * steps))
        else:
            features = [
                self._encode(self.rgb_models[key], image, condition, steps)
                for key, image in zip(self.rgb_keys, images, strict=True)
            ]
        parts = [f.reshape(batch, steps, -1) for f in features]
        parts += [obs[key].reshape(batch, steps, -1).float() for key in self.low_dim_keys]
        return torch.cat(parts, dim=-1).reshape(batch, steps * self.step_dim)

    @staticmethod
    def _encode(
        model: nn.Module, images: torch.Tensor, condition: torch.Tensor | None, steps: int
    ) -> torch.Tensor:
        """Features of images [N, 3, h, w] (N a multiple of B * steps, batch-major), conditioned if the model
        takes a condition."""
        if not getattr(model, "condition_dim", 0):
            return model(images)
        if condition is None:
            raise LbmError(
                "the image encoder is conditioned on the instruction but got no instruction features"
            )
        per_image = condition.repeat_interleave(steps, dim=0)
        return model(images, per_image.repeat(images.shape[0] // per_image.shape[0], 1))

    def _preprocess(self, images: torch.Tensor, generators: SampleGenerators | None) -> torch.Tensor:
        """[N, 3, H, W] uint8 or float -> float [N, 3, crop_h, crop_w] in [0, 1]."""
        images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        images = self.resize(images)
        if self.crop_shape is None:
            return images
        if self.training and self.random_crop:
            return random_crop(images, *self.crop_shape, generators)
        return self.center_crop(images)

    def _rgb_model(self, key: str) -> nn.Module:
        return self.rgb_models["shared" if self.share_rgb_model else key]

    def _rgb_models(self, rgb_model: nn.Module | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
        if isinstance(rgb_model, Mapping):
            if self.share_rgb_model or sorted(rgb_model) != self.rgb_keys:
                raise LbmError(
                    f"rgb_model has models for {sorted(rgb_model)}: give one per camera {self.rgb_keys} "
                    f"with share_rgb_model: false, or a single model"
                )
            return dict(rgb_model)
        if self.share_rgb_model:
            return {"shared": rgb_model}
        return {key: rgb_model if i == 0 else copy.deepcopy(rgb_model) for i, key in enumerate(self.rgb_keys)}

    def _image_shapes(
        self, obs_meta: Mapping, resize_shape: list[int] | None, crop_shape: list[int] | None
    ) -> dict[str, tuple[int, int]]:
        """The (height, width) each camera's rgb model sees; LbmError when a crop does not fit the images."""
        shapes = {}
        for key in self.rgb_keys:
            size = tuple(resize_shape) if resize_shape else tuple(obs_meta[key]["shape"][1:])
            if crop_shape and (size[0] < crop_shape[0] or size[1] < crop_shape[1]):
                raise LbmError(
                    f"crop_shape {list(crop_shape)} is larger than the {key} images {list(size)}: "
                    f"use a crop no larger than the (resized) image"
                )
            shapes[key] = tuple(crop_shape) if crop_shape else size
        if self.share_rgb_model and len(set(shapes.values())) > 1:
            raise LbmError(
                f"cameras have different sizes {shapes} but share one model: set resize_shape or crop_shape"
            )
        return shapes


def _feature_dim(model: nn.Module, image_shape: tuple[int, int]) -> int:
    """The model's `output_dim`, else the feature size of one blank image run through it."""
    if hasattr(model, "output_dim"):
        return int(model.output_dim)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        features = model(torch.zeros(1, 3, *image_shape, device=device))
    model.train(was_training)
    return features.shape[-1]
