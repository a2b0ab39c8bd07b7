from __future__ import annotations

import subprocess
import sys

import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lbm.train.legacy_targets import LEGACY_TARGETS, rewrite_legacy_targets

# The seed's conditional sweep files (./sweep/config/conditional/example_*.yaml), as users have them.
EXAMPLE_CLIP_ADDON = """
policy:
  obs_encoder:
    rgb_model:
      _target_: diffusion_policy.model.vision.model_getter.get_clip_vit_base_patch16
    resize_shape: [256, 342]
    crop_shape: [224, 224]
    share_rgb_model: True
"""
EXAMPLE_RESNET = """
policy:
  obs_encoder:
    rgb_model:
      _target_: diffusion_policy.model.vision.model_getter.get_resnet
      name: resnet18
      weights: IMAGENET1K_V1
"""


def test_the_seed_resnet_sweep_file_instantiates_our_resnet(tmp_path, monkeypatch):
    torch.manual_seed(0)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    saved = torchvision.models.resnet18().state_dict()
    torch.save(saved, checkpoints / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = OmegaConf.create(EXAMPLE_RESNET)
    rewrite_legacy_targets(cfg)
    assert cfg.policy.obs_encoder.rgb_model._target_ == "lbm.train.models.vision.get_resnet"
    encoder = instantiate(cfg.policy.obs_encoder.rgb_model)
    torch.testing.assert_close(encoder.backbone.conv1.weight, saved["conv1.weight"])
    assert encoder.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 512)


def test_the_seed_clip_sweep_file_instantiates_our_clip_and_keeps_the_rest():
    cfg = OmegaConf.create(EXAMPLE_CLIP_ADDON)
    rewrite_legacy_targets(cfg)
    rgb = cfg.policy.obs_encoder.rgb_model
    assert rgb._target_ == "lbm.train.models.vision.get_clip_vit_base_patch16"
    assert cfg.policy.obs_encoder.crop_shape == [224, 224]
    # offline here: build it from scratch, small, through the same target
    encoder = instantiate(
        rgb,
        pretrained=False,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    assert encoder.vision_model.config.patch_size == 16


def test_targets_inside_lists_are_rewritten_and_interpolations_and_missing_values_kept():
    old = next(iter(LEGACY_TARGETS))
    cfg = OmegaConf.create(
        {"models": [{"_target_": old}], "alias": "${models}", "path": "???", "other": {"_target_": "a.b"}}
    )
    rewrite_legacy_targets(cfg)
    assert cfg.models[0]._target_ == LEGACY_TARGETS[old]
    assert OmegaConf.is_interpolation(cfg, "alias") and OmegaConf.is_missing(cfg, "path")
    assert cfg.other._target_ == "a.b"


def test_every_new_target_resolves():
    from hydra.utils import get_object

    for new in LEGACY_TARGETS.values():
        assert callable(get_object(new))


def test_rewriting_does_not_import_torch():
    code = "import sys, lbm.train.legacy_targets; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


def test_seed_files_switch_the_encoder_of_the_shipped_configs(tmp_path, monkeypatch):
    """Merging keeps the previous encoder's options in the node; the new encoder must accept them."""
    from lbm.train.compose import compose_config

    monkeypatch.setenv("LBM_DATA_DIR", str(tmp_path))
    tiny = OmegaConf.merge(
        compose_config("train_diffusion_unet_keypoints_lang_tiny"), OmegaConf.create(EXAMPLE_CLIP_ADDON)
    )
    rewrite_legacy_targets(tiny)
    assert {"name", "weights"} <= set(tiny.policy.obs_encoder.rgb_model)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    encoder = instantiate(tiny.policy.obs_encoder.rgb_model, pretrained=False, **small)
    assert encoder.vision_model.config.patch_size == 16

    base = compose_config(
        "train_diffusion_unet_clip_lang_stage_base", [f"task.dataset_path={tmp_path}/data.zarr"]
    )
    base = OmegaConf.merge(base, OmegaConf.create(EXAMPLE_RESNET))
    base.policy.obs_encoder.rgb_model.weights = None
    base.policy.obs_encoder.rgb_model.pretrained = True  # as a CLIP node might carry
    rewrite_legacy_targets(base)
    assert instantiate(base.policy.obs_encoder.rgb_model).output_dim == 512
