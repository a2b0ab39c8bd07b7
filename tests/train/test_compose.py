"""Composing training configs: package and user configs, overrides, and the errors users get."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lbm.errors import LbmError
from lbm.train.compose import available_configs, compose_config

TINY = "train_diffusion_unet_keypoints_lang_tiny"
BASE = "train_diffusion_unet_clip_lang_stage_base"


def test_package_configs_are_listed():
    assert {TINY, BASE} <= set(available_configs())


def test_tiny_config_has_the_diffusion_policy_structure():
    cfg = compose_config(TINY)
    for section in (
        "task",
        "policy",
        "ema",
        "dataloader",
        "val_dataloader",
        "optimizer",
        "training",
        "checkpoint",
        "logging",
    ):
        assert section in cfg, section
    encoder = cfg.policy.obs_encoder
    assert {"rgb_model", "resize_shape", "crop_shape", "share_rgb_model"} <= set(encoder)
    for key in (
        "num_epochs",
        "max_train_steps",
        "val_every",
        "val_per_step",
        "lr_scheduler",
        "lr_warmup_steps",
        "gradient_accumulate_every",
        "lr_scale_for_grouped_params",
        "seed",
        "resume",
        "resume_checkpoint_path",
        "device",
    ):
        assert key in cfg.training, key
    assert {"every_n_steps", "topk"} <= set(cfg.checkpoint)
    assert {"mode", "project", "name", "group", "tags"} <= set(cfg.logging)


def test_overrides_set_add_delete_and_lists():
    cfg = compose_config(
        TINY,
        [
            "training.num_epochs=5",
            "+training.note=hello",
            "~training.sample_every",
            "policy.down_dims=[64,128,256]",
        ],
    )
    assert cfg.training.num_epochs == 5
    assert cfg.training.note == "hello"
    assert "sample_every" not in cfg.training
    assert list(cfg.policy.down_dims) == [64, 128, 256]


def test_base_config_requires_a_dataset_path():
    with pytest.raises(LbmError, match="task.dataset_path"):
        compose_config(BASE)
    cfg = compose_config(BASE, ["task.dataset_path=s3://bucket/data.zarr"])
    assert cfg.task.dataset.dataset_path == "s3://bucket/data.zarr"


def test_interpolations_are_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("LBM_DATA_DIR", str(tmp_path))
    cfg = compose_config(TINY, ["horizon=32"])
    assert cfg.task.dataset.horizon == 32
    assert cfg.task.dataset_path == f"{tmp_path}/synthetic_reach_4tasks_100episodes_32px_seed0.zarr"
    assert "${" not in OmegaConf.to_yaml(cfg)


def test_user_config_dir_extends_package_configs(tmp_path):
    (tmp_path / "my_run.yaml").write_text(f"defaults:\n  - {TINY}\n  - _self_\ntraining:\n  num_epochs: 7\n")
    assert "my_run" in available_configs(str(tmp_path))
    cfg = compose_config("my_run", ["optimizer.lr=0.01"], config_dir=str(tmp_path))
    assert cfg.training.num_epochs == 7 and cfg.optimizer.lr == 0.01


def test_seed_legacy_targets_resolve_to_ours():
    cfg = compose_config(
        TINY,
        [
            "policy.obs_encoder.rgb_model._target_=diffusion_policy.model.vision.model_getter.get_resnet",
            "policy.obs_encoder.rgb_model.weights=IMAGENET1K_V1",
        ],
    )
    assert cfg.policy.obs_encoder.rgb_model._target_ == "lbm.train.models.vision.get_resnet"


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("train_diffusion_unet_keypoints_lang_tiy", [], f"did you mean '{TINY}'"),
        (TINY, ["training.num_epochs=[3"], "malformed override"),
        (
            TINY,
            ["training.no_such_key=3"],
            r"has no key training.no_such_key.*use \+training.no_such_key=VALUE",
        ),
        (
            TINY,
            ["dataloader.batch_size=abc"],
            "dataloader.batch_size=.abc. is not valid: must be a whole number",
        ),
        (TINY, ["training.resume=maybe"], "must be true or false"),
    ],
)
def test_bad_input_is_one_clear_error(name, overrides, message):
    with pytest.raises(LbmError, match=message) as raised:
        compose_config(name, overrides)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("name", [TINY, "train_diffusion_unet_keypoints_lang_small"])
def test_the_names_before_the_rename_are_unknown_and_point_to_the_new_ones(name):
    """The tiny and small configs were named after a ResNet before they named their keypoint CNN."""
    old = name.replace("keypoints", "resnet")
    with pytest.raises(LbmError, match=rf"^unknown config '{old}'; did you mean '{name}'\?"):
        compose_config(old)


def test_a_key_without_a_rule_keeps_the_kind_of_its_default(tmp_path):
    (tmp_path / "my_run.yaml").write_text(f"defaults:\n  - {TINY}\n  - _self_\ntraining:\n  note_count: 3\n")
    with pytest.raises(LbmError, match=r"training.note_count must be a number \(default 3\)"):
        compose_config("my_run", ["training.note_count=abc"], config_dir=str(tmp_path))
    assert (
        compose_config("my_run", ["training.note_count=4"], config_dir=str(tmp_path)).training.note_count == 4
    )
