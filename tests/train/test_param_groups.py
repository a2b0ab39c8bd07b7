"""Per-module learning-rate scales (`training.lr_scale_for_grouped_params`)."""

from __future__ import annotations

import pytest
import torch

from lbm.errors import LbmError
from lbm.train.trainer import param_groups


class TwoPart(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.obs_encoder = torch.nn.Linear(2, 2)
        self.model = torch.nn.Linear(2, 2)
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)


def test_scaled_module_gets_its_own_lr_and_frozen_params_are_left_out():
    policy = TwoPart()
    groups = param_groups(policy, 1e-3, {"obs_encoder": 0.1})
    by_lr = {round(g["lr"], 12): {id(p) for p in g["params"]} for g in groups}
    assert by_lr[1e-4] == {id(p) for p in policy.obs_encoder.parameters()}
    assert by_lr[1e-3] == {id(p) for p in policy.model.parameters()}
    assert sum(len(g["params"]) for g in groups) == 4


def test_unknown_module_name_is_a_user_error():
    with pytest.raises(LbmError, match="obs_encodr.*obs_encoder"):
        param_groups(TwoPart(), 1e-3, {"obs_encodr": 0.1})
