"""Min-max normalisation of actions and low-dimensional observations to [-1, 1], kept in checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

# A dimension whose range is below this is constant in the data: it maps to 0 and back to its value.
RANGE_EPS = 1e-4


class _Range(nn.Module):
    """Per-dimension `min` and `max` of one key, as buffers (saved in the state_dict)."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("min", low)
        self.register_buffer("max", high)

    def center_and_half_range(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.min.to(like), self.max.to(like)
        half_range = (high - low) / 2
        half_range = torch.where(half_range < RANGE_EPS / 2, torch.ones_like(half_range), half_range)
        return (high + low) / 2, half_range


class LinearNormalizer(nn.Module):
    """Maps each key's values from [min, max] to [-1, 1] per dimension, and back.

    The last dimensions of `x` match the stats' shape (e.g. action stats [A] for x [B, T, A]). Dimensions
    with (almost) no range map to 0. Stats are buffers, so they travel with the model's state_dict; a fresh
    normalizer takes its keys from the state_dict it loads.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ranges = nn.ModuleDict()

    def set_stats(self, stats: Mapping[str, Mapping[str, Any]]) -> None:
        """Use {key: {"min": array, "max": array, ...}} (other stats are ignored); replaces all keys.

        The buffers stay on the device the normalizer's buffers are on (CPU for a new normalizer).
        """
        device = next((buffer.device for buffer in self.buffers()), torch.device("cpu"))

        def as_buffer(values: Any) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float32).detach().clone().to(device)

        self.ranges = nn.ModuleDict(
            {key: _Range(as_buffer(values["min"]), as_buffer(values["max"])) for key, values in stats.items()}
        )

    def keys(self) -> list[str]:
        return list(self.ranges.keys())

    def __contains__(self, key: str) -> bool:
        return key in self.ranges

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        center, half_range = self._range(key).center_and_half_range(x)
        return (x - center) / half_range

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        center, half_range = self._range(key).center_and_half_range(x)
        return x * half_range + center

    def _range(self, key: str) -> _Range:
        if key not in self.ranges:
            raise KeyError(f"no normalizer stats for {key!r} (there are {self.keys()}); call set_stats first")
        return self.ranges[key]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        stats: dict[str, dict[str, torch.Tensor]] = {}
        for name, value in state_dict.items():
            if name.startswith(f"{prefix}ranges."):
                key, _, stat = name[len(f"{prefix}ranges.") :].rpartition(".")
                stats.setdefault(key, {})[stat] = value
        if stats:
            self.set_stats(stats)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
