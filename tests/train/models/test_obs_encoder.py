from __future__ import annotations

import pytest
import torch
from torch import nn

from lbm.errors import LbmError
from lbm.train.models.obs_encoder import MultiImageObsEncoder, random_crop
from lbm.train.models.vision import get_resnet
from lbm.train.sample_generators import SampleGenerators

torch.set_num_threads(2)


def shape_meta(*cameras: str, size: int = 32) -> dict:
    obs = {camera: {"shape": [3, size, size], "type": "rgb"} for camera in cameras}
    obs["agent_pos"] = {"shape": [2], "type": "low_dim"}
    return {"obs": obs, "action": {"shape": [2]}}


def observation(*cameras: str, batch: int = 3, steps: int = 2, size: int = 32) -> dict:
    generator = torch.Generator().manual_seed(0)
    obs = {
        camera: torch.randint(0, 256, (batch, steps, 3, size, size), dtype=torch.uint8, generator=generator)
        for camera in cameras
    }
    obs["agent_pos"] = torch.rand(batch, steps, 2, generator=generator) * 2 - 1
    return obs


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class TinyConv(nn.Module):
    """An rgb model without `output_dim`: [N, 3, H, W] -> [N, 5]."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images):
        return self.net(images)


def test_resnet18_features_of_two_steps_with_low_dim_state():
    torch.manual_seed(0)
    encoder = MultiImageObsEncoder(shape_meta("image"), get_resnet("resnet18"), crop_shape=[28, 28])
    out = encoder(observation("image"))
    assert encoder.step_dim == 512 + 2
    assert out.shape == (3, encoder.output_dim(2)) == (3, 2 * 514)
    # the low-dim values are passed through, after each step's image features
    torch.testing.assert_close(out.view(3, 2, 514)[..., 512:], observation("image")["agent_pos"])


def test_random_crops_in_training_and_the_centre_crop_in_eval():
    torch.manual_seed(0)
    encoder = MultiImageObsEncoder(shape_meta("image"), get_resnet("resnet18"), crop_shape=[28, 28])
    obs = observation("image")
    encoder.train()
    assert not torch.allclose(encoder(obs), encoder(obs))
    encoder.eval()
    first = encoder(obs)
    torch.testing.assert_close(first, encoder(obs))
    centre = obs["image"][..., 2:30, 2:30].flatten(0, 1).float() / 255
    image_features = first.view(3, 2, 514)[..., :512].flatten(0, 1)
    torch.testing.assert_close(image_features, encoder.rgb_models["image"](centre))


def test_random_crop_takes_an_independent_window_of_each_image():
    torch.manual_seed(0)
    images = torch.arange(10 * 10, dtype=torch.float32).view(1, 1, 10, 10).expand(64, 3, 10, 10)
    crops = random_crop(images, 6, 7)
    assert crops.shape == (64, 3, 6, 7)
    corners = {(int(crop[0, 0, 0]) // 10, int(crop[0, 0, 0]) % 10) for crop in crops}
    assert len(corners) > 1
    for crop in crops:
        top, left = int(crop[0, 0, 0]) // 10, int(crop[0, 0, 0]) % 10
        torch.testing.assert_close(crop, images[0, :, top : top + 6, left : left + 7])


def test_separate_cameras_get_independent_copies_and_shared_cameras_one_model():
    resnet = get_resnet("resnet18")
    separate = MultiImageObsEncoder(shape_meta("left", "right"), resnet, crop_shape=[28, 28])
    shared = MultiImageObsEncoder(
        shape_meta("left", "right"), get_resnet("resnet18"), crop_shape=[28, 28], share_rgb_model=True
    )
    assert count(separate) == 2 * count(shared) == 2 * count(resnet)
    left, right = separate.rgb_models["left"], separate.rgb_models["right"]
    assert left.backbone.conv1.weight.data_ptr() != right.backbone.conv1.weight.data_ptr()
    obs = observation("left", "right")
    for encoder in (separate, shared):
        assert encoder.eval()(obs).shape == (3, 2 * (512 + 512 + 2))


def test_one_model_per_camera_as_a_dict_and_sizes_found_by_a_dry_run():
    models = {"left": TinyConv(), "right": TinyConv()}
    encoder = MultiImageObsEncoder(
        shape_meta("left", "right"), models, resize_shape=[40, 40], crop_shape=[36, 36]
    )
    assert encoder.rgb_feature_dims == {"left": 5, "right": 5}
    assert encoder(observation("left", "right")).shape == (3, 2 * 12)
    assert encoder.rgb_models["left"] is models["left"] and encoder.training
    with pytest.raises(LbmError, match=r"one per camera \['left', 'right'\]"):
        MultiImageObsEncoder(shape_meta("left", "right"), {"left": TinyConv()})


def test_uint8_images_are_read_as_float_in_unit_range():
    encoder = MultiImageObsEncoder(shape_meta("image"), TinyConv(), crop_shape=[28, 28]).eval()
    obs = observation("image")
    as_float = {**obs, "image": obs["image"].float() / 255}
    torch.testing.assert_close(encoder(obs), encoder(as_float))


def test_group_norm_replaces_batch_norm():
    encoder = MultiImageObsEncoder(shape_meta("image"), get_resnet("resnet18"), use_group_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in encoder.modules())
    assert encoder(observation("image", batch=1)).shape == (1, 2 * 514)


@pytest.mark.parametrize(
    ("meta", "kwargs", "message"),
    [
        (shape_meta("image"), {"crop_shape": [40, 40]}, r"crop_shape \[40, 40\] is larger than the image"),
        ({"obs": {"depth": {"shape": [1, 8, 8], "type": "depth"}}}, {}, r"unknown type \{'depth': 'depth'\}"),
    ],
)
def test_impossible_configs_are_user_errors(meta, kwargs, message):
    with pytest.raises(LbmError, match=message):
        MultiImageObsEncoder(meta, TinyConv(), **kwargs)


def test_missing_observation_key_names_what_is_there():
    encoder = MultiImageObsEncoder(shape_meta("image"), TinyConv())
    with pytest.raises(LbmError, match=r"lacks keys \['image'\].*\['agent_pos'\]"):
        encoder({"agent_pos": torch.zeros(1, 2, 2)})


def test_the_clip_configs_encoder_runs_from_a_local_checkpoint(tiny_clip_dir, tmp_path, monkeypatch):
    from hydra.utils import instantiate

    from lbm.train.compose import compose_config

    monkeypatch.setenv("LBM_DATA_DIR", str(tmp_path))
    cfg = compose_config(
        "train_diffusion_unet_clip_lang_stage_base", [f"task.dataset_path={tmp_path}/d.zarr"]
    )
    cfg.policy.obs_encoder.rgb_model.model_name_or_path = str(tiny_clip_dir)
    encoder = instantiate(cfg.policy.obs_encoder, _convert_="partial").eval()
    assert encoder.share_rgb_model and encoder.crop_shape == [224, 224]
    size = cfg.task.shape_meta.obs.image.shape[1:]
    obs = {
        "image": torch.randint(0, 256, (2, cfg.n_obs_steps, 3, *size), dtype=torch.uint8),
        "agent_pos": torch.rand(2, cfg.n_obs_steps, 2),
    }
    assert encoder(obs).shape == (2, encoder.output_dim(cfg.n_obs_steps)) == (2, 2 * (16 + 2))


@pytest.mark.parametrize("share", [False, True])
def test_each_image_gets_the_condition_of_its_own_sample(share):
    from lbm.train.models.keypoints import get_keypoint_cnn

    torch.manual_seed(0)
    model = get_keypoint_cnn(channels=[8], num_keypoints=3, condition_dim=4)
    torch.nn.init.normal_(model.film.weight)
    encoder = MultiImageObsEncoder(
        shape_meta("left", "right"), model, crop_shape=[28, 28], share_rgb_model=share
    )
    encoder.eval()
    obs, condition = observation("left", "right"), torch.randn(3, 4)
    features = encoder(obs, condition=condition)
    for b in range(3):  # sample b alone, with its own condition, gives its row of the batch
        alone = encoder({key: value[b : b + 1] for key, value in obs.items()}, condition=condition[b : b + 1])
        torch.testing.assert_close(features[b : b + 1], alone)
    with pytest.raises(LbmError, match="no instruction features"):
        encoder(obs)


def test_random_crops_drawn_from_sample_generators_follow_the_sample():
    images = torch.rand(3, 2, 3, 10, 10)  # 3 samples of 2 steps
    batch = random_crop(images.flatten(0, 1), 6, 7, SampleGenerators(1, 0, [8, 9, 10]))
    alone = random_crop(images[1], 6, 7, SampleGenerators(1, 0, [9]))
    assert batch.shape == (6, 3, 6, 7)
    torch.testing.assert_close(batch[2:4], alone)
    other_epoch = random_crop(images[1], 6, 7, SampleGenerators(1, 1, [9]))
    assert not torch.equal(alone, other_epoch)
