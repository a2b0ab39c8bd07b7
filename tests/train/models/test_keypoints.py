from __future__ import annotations

import pytest
import torch

from lbm.errors import LbmError
from lbm.train.models.keypoints import SpatialSoftmax, get_keypoint_cnn

torch.set_num_threads(2)


def test_spatial_softmax_finds_where_a_feature_is():
    pool = SpatialSoftmax(in_channels=1, num_keypoints=1)
    with torch.no_grad():
        pool.project.weight.fill_(1.0)
        pool.project.bias.zero_()
        pool.log_temperature.fill_(-3.0)  # sharp: the keypoint is the maximum
    features = torch.zeros(2, 1, 9, 13)
    features[0, 0, 2, 10] = 1.0  # row 2 of 9, column 10 of 13
    features[1, 0, 8, 0] = 1.0
    keypoints = pool(features)
    assert keypoints.shape == (2, 2) and pool.output_dim == 2
    expected = torch.tensor([[10 / 12 * 2 - 1, 2 / 8 * 2 - 1], [-1.0, 1.0]])
    torch.testing.assert_close(keypoints, expected, atol=1e-3, rtol=0)


def test_keypoint_cnn_gives_output_dim_features_and_ignores_other_getters_options():
    encoder = get_keypoint_cnn(channels=[8, 16], num_keypoints=5, name="resnet18", weights=None)
    assert encoder(torch.rand(3, 3, 28, 28)).shape == (3, 10) and encoder.output_dim == 10
    with pytest.raises(LbmError, match="no option chanels"):
        get_keypoint_cnn(chanels=[8])
    with pytest.raises(LbmError, match="num_keypoints >= 1"):
        get_keypoint_cnn(num_keypoints=0)


def test_a_conditioned_encoder_starts_unconditioned_and_its_features_then_follow_the_condition():
    torch.manual_seed(0)
    encoder = get_keypoint_cnn(channels=[8, 16], num_keypoints=4, condition_dim=3)
    images, a, b = torch.rand(2, 3, 20, 20), torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(encoder(images, a), encoder(images, b))  # the FiLM starts as the identity
    torch.nn.init.normal_(encoder.film.weight)
    assert not torch.allclose(encoder(images, a), encoder(images, b))
    with pytest.raises(ValueError, match="pass condition"):
        encoder(images)


def test_pretrained_weights_asked_of_the_keypoint_cnn_are_a_user_error():
    with pytest.raises(LbmError, match="no pretrained weights.*get_resnet"):
        get_keypoint_cnn(weights="IMAGENET1K_V1")
