from __future__ import annotations

import pytest
import torch

from lbm.errors import LbmError
from lbm.train.models.unet1d import ConditionalUnet1D

torch.set_num_threads(2)


@pytest.mark.parametrize("down_dims", [[64, 128, 256], [32, 64]])
def test_output_has_the_shape_of_the_sample_at_horizon_16(down_dims):
    torch.manual_seed(0)
    unet = ConditionalUnet1D(3, 10, diffusion_step_embed_dim=32, down_dims=down_dims, horizon=16)
    out = unet(torch.randn(4, 16, 3), torch.tensor([0, 5, 10, 99]), torch.randn(4, 10))
    assert out.shape == (4, 16, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cond_predict_scale", [True, False])
def test_global_condition_and_timestep_change_the_output(cond_predict_scale):
    torch.manual_seed(0)
    unet = ConditionalUnet1D(2, 6, 32, [32, 64], cond_predict_scale=cond_predict_scale).eval()
    sample, cond = torch.randn(2, 16, 2), torch.randn(2, 6)
    base = unet(sample, 3, cond)
    assert not torch.allclose(base, unet(sample, 3, cond + 1.0), atol=1e-5)
    assert not torch.allclose(base, unet(sample, 40, cond), atol=1e-5)
    # a scalar timestep is the same as that timestep for every sample
    torch.testing.assert_close(base, unet(sample, torch.tensor([3, 3]), cond))


def test_gradients_reach_the_conditioning_layers():
    unet = ConditionalUnet1D(2, 6, 32, [32, 64])
    cond = torch.randn(2, 6, requires_grad=True)
    unet(torch.randn(2, 8, 2), torch.tensor([1, 2]), cond).square().mean().backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    assert all(p.grad is not None for p in unet.parameters())


def test_horizon_that_does_not_halve_evenly_is_refused_at_construction():
    with pytest.raises(LbmError, match="multiple of 4"):
        ConditionalUnet1D(2, 6, 32, [32, 64, 128], horizon=10)
    ConditionalUnet1D(2, 6, 32, [32, 64, 128], horizon=12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"down_dims": []}, "down_dims is empty"),
        ({"down_dims": [30, 64]}, "multiple of n_groups=8"),
        ({"kernel_size": 4}, "must be odd"),
        ({"diffusion_step_embed_dim": 33}, "must be even"),
    ],
)
def test_impossible_shapes_are_user_errors(kwargs, message):
    with pytest.raises(LbmError, match=message):
        ConditionalUnet1D(2, 6, **{"diffusion_step_embed_dim": 32, "down_dims": [32, 64], **kwargs})
