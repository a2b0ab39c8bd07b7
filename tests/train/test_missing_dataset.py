"""The line for a missing replay buffer names the `lbm data` options that make what the task reads."""

from __future__ import annotations

from omegaconf import OmegaConf

from lbm.train.compose import compose_config
from lbm.train.missing_dataset import missing_dataset_line


def line(config: str, *overrides: str) -> str:
    task = OmegaConf.to_container(compose_config(config, overrides).task, resolve=True)
    return missing_dataset_line(task, "/data/demos.zarr")


def test_meta_world_images_name_their_size_and_camera():
    assert line(
        "train_diffusion_unet_resnet_lang_metaworld_mt10_image", "task.dataset_path=/data/demos.zarr"
    ) == (
        "no replay buffer at /data/demos.zarr, the dataset of the Meta-World task metaworld_mt10_image: make "
        "it with `lbm data metaworld --out /data/demos.zarr --tasks mt10 --image-size 84 --camera corner2`"
    )


def test_a_synthetic_task_that_generates_its_data_names_the_options_it_generates_with():
    assert line("train_diffusion_unet_keypoints_lang_small", "task.synthesize.seed=3").endswith(
        "`lbm data synth --out /data/demos.zarr --tasks 4 --image-size 32 --episodes-per-task 200 --seed 3`"
    )
