"""The config schema: values are checked for meaning when a config is composed, against what the real model,
loader and schedulers accept."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lbm.errors import LbmError
from lbm.train.compose import compose_config
from lbm.train.config.schema import BETA_SCHEDULES, LR_SCHEDULERS, unruled_keys

TINY = "train_diffusion_unet_keypoints_lang_tiny"
BASE = "train_diffusion_unet_clip_lang_stage_base"


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LBM_DATA_DIR", str(tmp_path))


def refused(overrides: list[str]) -> str:
    with pytest.raises(LbmError) as raised:
        compose_config(TINY, overrides)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["dataloader.batch_size=-5"], ["dataloader.batch_size=-5 is not valid", ">= 1"]),
        (["val_dataloader.batch_size=0"], ["val_dataloader.batch_size=0 is not valid", ">= 1"]),
        (["training.max_train_steps=-3"], ["training.max_train_steps=-3 is not valid", ">= 1"]),
        (["training.max_train_steps=0"], ["training.max_train_steps=0 is not valid"]),
        (["optimizer.lr=-1"], ["optimizer.lr=-1 is not valid", "> 0"]),
        (["optimizer.lr=0"], ["optimizer.lr=0 is not valid", "> 0"]),
        (["optimizer.lr=inf"], ["optimizer.lr=inf is not valid", "finite"]),
        (["optimizer.betas=[0.9,1.5]"], ["optimizer.betas[1]=1.5 is not valid", "< 1"]),
        (["optimizer.betas=[0.9]"], ["optimizer.betas=[0.9] is not valid", "at least 2 items"]),
        (["optimizer.weight_decay=-0.1"], ["optimizer.weight_decay=-0.1 is not valid", ">= 0"]),
        (["dataloader.num_workers=-2"], ["dataloader.num_workers=-2 is not valid", ">= 0"]),
        (["dataloader.batch_size=2.5"], ["dataloader.batch_size=2.5 is not valid", "must be a whole number"]),
        (["horizon=8"], ["horizon=8 is too short for n_obs_steps=2 and n_action_steps=8", "= 9"]),
        (["n_obs_steps=0"], ["n_obs_steps=0 is not valid", ">= 1"]),
        (["policy.horizon=8"], ["policy.horizon=8 is too short", "policy.n_action_steps=8"]),
        (
            ["horizon=18", "policy.down_dims=[32,64,128]"],
            ["policy.horizon=18 must be a multiple of 4", "policy.down_dims=[32, 64, 128]"],
        ),
        (["policy.obs_encoder.crop_shape=[33,28]"], ["crop_shape=[33, 28] is larger", "32x32"]),
        (
            ["policy.obs_encoder.resize_shape=[24,24]"],
            ["crop_shape=[28, 28] is larger than the images resized", "resize_shape to 24x24"],
        ),
        (["policy.obs_encoder.crop_shape=[28]"], ["crop_shape=[28] is not valid", "at least 2 items"]),
        (["policy.obs_encoder.crop_shape=[0,0]"], ["crop_shape[0]=0 is not valid", ">= 1"]),
        (
            ["policy.num_inference_steps=51"],
            ["policy.num_inference_steps=51 must not exceed policy.noise_scheduler.num_train_timesteps=50"],
        ),
        (["policy.num_inference_steps=0"], ["policy.num_inference_steps=0 is not valid"]),
        (["policy.noise_scheduler.num_train_timesteps=0"], ["num_train_timesteps=0 is not valid"]),
        (["policy.noise_scheduler.beta_schedule=cos"], ["beta_schedule='cos' is not valid", "'laplace'"]),
        (["policy.noise_scheduler.beta_end=0.00001"], ["beta_start=0.0001 must be below beta_end=1e-05"]),
        (["policy.noise_scheduler.prediction_type=noise"], ["prediction_type='noise' is not valid"]),
        (["policy.down_dims=[]"], ["policy.down_dims=[] is not valid", "at least 1 item"]),
        (["policy.down_dims=[32,-64]"], ["policy.down_dims[1]=-64 is not valid"]),
        (["policy.down_dims=[30,60]"], ["down_dims=[30, 60] must all be multiples of policy.n_groups=8"]),
        (["policy.kernel_size=4"], ["policy.kernel_size=4 is not valid", "odd"]),
        (["policy.diffusion_step_embed_dim=33"], ["policy.diffusion_step_embed_dim=33 is not valid", "even"]),
        (["policy.text_encoder.embed_dim=0"], ["policy.text_encoder.embed_dim=0 is not valid"]),
        (["training.num_epochs=0"], ["training.num_epochs=0 is not valid", ">= 1"]),
        (["training.val_every=0"], ["training.val_every=0 is not valid", ">= 1"]),
        (["training.log_every=-1"], ["training.log_every=-1 is not valid"]),
        (["training.sample_every=-1"], ["training.sample_every=-1 is not valid", ">= 0"]),
        (["training.max_val_batches=0"], ["training.max_val_batches=0 is not valid"]),
        (["training.lr_warmup_steps=-10"], ["training.lr_warmup_steps=-10 is not valid", ">= 0"]),
        (["training.lr_scheduler=cosin"], ["training.lr_scheduler='cosin' is not valid", "'cosine'"]),
        (["training.gradient_accumulate_every=0"], ["training.gradient_accumulate_every=0 is not valid"]),
        (["training.lr_scale_for_grouped_params.obs_encoder=-1"], ["obs_encoder=-1 is not valid", ">= 0"]),
        (["training.seed=-1"], ["training.seed=-1 is not valid", ">= 0"]),
        (["training.device=gpu"], ["training.device='gpu' is not valid", "cuda:<index>"]),
        (["training.mixed_precision=fp16"], ["training.mixed_precision='fp16' is not valid", "'bf16'"]),
        (["checkpoint.every_n_steps=0"], ["checkpoint.every_n_steps=0 is not valid", ">= 1"]),
        (["checkpoint.topk=-1"], ["checkpoint.topk=-1 is not valid", ">= 0"]),
        (["ema.power=0"], ["ema.power=0 is not valid", "> 0"]),
        (["ema.inv_gamma=-1"], ["ema.inv_gamma=-1 is not valid"]),
        (["ema.max_value=1.5"], ["ema.max_value=1.5 is not valid", "<= 1"]),
        (["ema.update_after_step=-1"], ["ema.update_after_step=-1 is not valid"]),
        (["ema.min_value=0.5", "ema.max_value=0.4"], ["ema.min_value=0.5 must not exceed ema.max_value=0.4"]),
        (["~ema", "training.use_ema=true"], ["training.use_ema=true needs an ema section"]),
        (["task.dataset.val_ratio=1.0"], ["task.dataset.val_ratio=1.0 is not valid", "< 1"]),
        (["task.dataset.tasks=[]"], ["task.dataset.tasks=[] is not valid", "at least 1 item"]),
        (["task.synthesize.episodes_per_task=0"], ["task.synthesize.episodes_per_task=0 is not valid"]),
        (["task.synthesize.image_size=64"], ["synthesize.image_size=64 makes 64x64 images", "[3, 32, 32]"]),
        (["task.shape_meta.obs.image.type=depth"], ["task.shape_meta.obs.image.type='depth' is not valid"]),
        (
            ["task.shape_meta.obs.image.shape=[32,32]"],
            ["task.shape_meta.obs.image: an rgb observation's shape is [3, height, width]"],
        ),
        (["logging.mode=verbose"], ["logging.mode='verbose' is not valid", "'offline' or 'disabled'"]),
        (["~training.seed"], ["training.seed is missing"]),
    ],
)
def test_a_value_that_breaks_a_rule_is_one_line_naming_key_value_and_rule(overrides, fragments):
    message = refused(overrides)
    for fragment in fragments:
        assert fragment in message, message


PUSHT = ["task=pusht_image", "task.dataset_path=/data.zarr", "task.shape_meta.obs.image.shape=[3,32,32]"]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            ["+task.dataset.key_map.wrist=img"],
            ["key_map maps wrist, which shape_meta lacks", "image, agent_pos"],
        ),
        (
            ["task.dataset.key_map.agent_pos='state[0]'"],
            ["'state[0]' is not a stored key", "KEY[START:STOP]"],
        ),
        (["task.dataset.episode_tasks=[]"], ["task.dataset.episode_tasks=[] is not valid"]),
        (["task.dataset.episode_tasks.0.instruction=''"], ["episode_tasks[0].instruction='' is not valid"]),
        (["+task.dataset.episode_tasks.0.episodes=[3,1]"], ["episode_tasks[0]: episodes is [first, stop)"]),
        (
            ["task.dataset.episode_tasks=[{task:a,instruction:b},{task:c,instruction:d}]"],
            ["more than one episode_tasks entry, each needs episodes: [first, stop]"],
        ),
    ],
)
def test_a_buffer_mapping_that_breaks_a_rule_is_refused(overrides, fragments):
    message = refused([*PUSHT, *overrides])
    for fragment in fragments:
        assert fragment in message, message


def test_the_shipped_configs_pass():
    compose_config(TINY)
    compose_config(BASE, ["task.dataset_path=s3://bucket/data.zarr"])
    pusht = compose_config(BASE, ["task=pusht_image", "task.dataset_path=s3://bucket/pusht.zarr"])
    assert unruled_keys(OmegaConf.to_container(pusht, resolve=True)) == []


@pytest.mark.parametrize("name", [TINY, BASE])
def test_every_key_of_the_shipped_configs_has_a_rule(name):
    cfg = OmegaConf.to_container(compose_config(name, ["task.dataset_path=/data.zarr"]), resolve=True)
    assert unruled_keys(cfg) == []
    extra = ["+training.note=1", "+task.shape_meta.obs.image.note=1", "+policy.obs_encoder.rgb_model.note=1"]
    cfg = OmegaConf.to_container(compose_config(name, ["task.dataset_path=/data.zarr", *extra]), resolve=True)
    found = set(unruled_keys(cfg))
    assert {"task.shape_meta.obs.image.note", "policy.obs_encoder.rgb_model.note", "training.note"} <= found


@pytest.mark.parametrize(
    "overrides",
    [
        # The shortest horizon for 2 observed steps and 7 executed actions, a multiple of 2 (two UNet levels).
        ["horizon=8", "n_action_steps=7"],
        # A crop as large as the image; as many inference steps as training timesteps; the smallest dims.
        ["policy.obs_encoder.crop_shape=[32,32]", "policy.num_inference_steps=50"],
        ["policy.down_dims=[8,16]", "policy.n_groups=8", "policy.kernel_size=3"],
        ["policy.obs_encoder.resize_shape=[28,28]"],
    ],
)
def test_values_at_the_edge_of_a_rule_build_a_policy_that_trains_and_samples(overrides):
    import torch
    from hydra.utils import instantiate

    torch.manual_seed(0)
    cfg = compose_config(TINY, overrides)
    policy = instantiate(cfg.policy, _convert_="partial")
    shape_meta = cfg.task.shape_meta
    image_shape = (2, cfg.n_obs_steps, *shape_meta.obs.image.shape)
    batch = {
        "obs": {
            "image": torch.randint(0, 256, image_shape, dtype=torch.uint8),
            "agent_pos": torch.rand(2, cfg.n_obs_steps, *shape_meta.obs.agent_pos.shape),
        },
        "action": torch.rand(2, cfg.horizon, *shape_meta.action.shape) * 2 - 1,
        "instruction": ["reach the red square", "reach the blue circle"],
    }
    assert torch.isfinite(policy.compute_loss(batch))
    policy.eval()
    out = policy.predict_action(batch["obs"], batch["instruction"], normalized=True)
    assert out["action"].shape == (2, cfg.n_action_steps, *shape_meta.action.shape)


def test_the_allowed_lr_schedulers_are_the_ones_diffusers_builds_from_warmup_and_length():
    import torch
    from diffusers.optimization import SchedulerType, get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    buildable = []
    for kind in SchedulerType:
        try:
            get_scheduler(kind.value, optimizer=optimizer, num_warmup_steps=2, num_training_steps=10)
        except Exception:  # noqa: BLE001 - any failure means the trainer could not build it either
            continue
        buildable.append(kind.value)
    assert sorted(buildable) == sorted(LR_SCHEDULERS)


def test_the_allowed_beta_schedules_are_the_ones_diffusers_knows():
    from diffusers import DDPMScheduler

    for schedule in BETA_SCHEDULES:
        DDPMScheduler(num_train_timesteps=10, beta_schedule=schedule)
    with pytest.raises(NotImplementedError):
        DDPMScheduler(num_train_timesteps=10, beta_schedule="cosine")
