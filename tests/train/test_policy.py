from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from hydra.utils import instantiate
from torch import nn

from lbm.errors import LbmError
from lbm.train.models.obs_encoder import MultiImageObsEncoder
from lbm.train.models.text import HashingTextEncoder
from lbm.train.policy import DiffusionUnetLangPolicy
from lbm.train.sample_generators import SampleGenerators

torch.set_num_threads(2)
SHAPE_META = {
    "obs": {"image": {"shape": [3, 32, 32], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
    "action": {"shape": [2]},
}
STATS = {
    "action": {"min": [0.0, 100.0], "max": [10.0, 300.0]},
    "agent_pos": {"min": [0.0, 0.0], "max": [5.0, 5.0]},
}
INSTRUCTIONS = [
    "reach the red square",
    "reach the blue circle",
    "reach the green star",
    "reach the red square",
]


def small_cnn() -> nn.Module:
    """An image model [N, 3, H, W] -> [N, 16] that trains in seconds on a CPU (ResNet-18: last test)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.GroupNorm(2, 8),
        nn.Mish(),
        nn.Conv2d(8, 16, 3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def make_policy(seed: int = 0, prediction_type: str = "epsilon", **kwargs) -> DiffusionUnetLangPolicy:
    torch.manual_seed(seed)
    options = dict(
        shape_meta=SHAPE_META,
        obs_encoder=MultiImageObsEncoder(SHAPE_META, small_cnn(), crop_shape=[28, 28]),
        text_encoder=HashingTextEncoder(embed_dim=16, vocab_buckets=256),
        noise_scheduler=DDPMScheduler(
            num_train_timesteps=20,
            beta_schedule="squaredcos_cap_v2",
            clip_sample=True,
            prediction_type=prediction_type,
        ),
        horizon=16,
        n_action_steps=8,
        n_obs_steps=2,
        num_inference_steps=5,
        diffusion_step_embed_dim=32,
        down_dims=[32, 64],
    )
    policy = DiffusionUnetLangPolicy(**{**options, **kwargs})
    policy.set_normalizer(STATS)
    return policy


def make_batch(batch: int = 4) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {
        "obs": {
            "image": torch.randint(0, 256, (batch, 2, 3, 32, 32), dtype=torch.uint8, generator=generator),
            "agent_pos": torch.rand(batch, 2, 2, generator=generator) * 2 - 1,
        },
        "action": torch.rand(batch, 16, 2, generator=generator) * 2 - 1,
        "instruction": INSTRUCTIONS[:batch],
    }


def sample(policy, batch, seed=3, instructions=None, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return policy.predict_action(
        batch["obs"], instructions or batch["instruction"], generator=generator, **kwargs
    )


def test_loss_is_finite_and_falls_over_30_adam_steps_on_a_fixed_batch():
    policy = make_policy()
    batch = make_batch()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = policy.compute_loss(batch)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, losses


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_other_prediction_types_train(prediction_type):
    policy = make_policy(prediction_type=prediction_type)
    loss = policy.compute_loss(make_batch())
    loss.backward()
    assert torch.isfinite(loss) and policy.model.head[-1].weight.grad.abs().sum() > 0


def test_predict_action_shapes_and_units():
    policy = make_policy().eval()
    batch = make_batch(3)
    normalized = sample(policy, batch, normalized=True)
    assert normalized["action_pred"].shape == (3, 16, 2)
    assert normalized["action"].shape == (3, 8, 2)
    # the executed actions start at the last observation step
    torch.testing.assert_close(normalized["action"], normalized["action_pred"][:, 1:9])
    assert normalized["action_pred"].abs().max() <= 1.0  # clip_sample keeps samples in the normalized range

    raw_obs = {
        **batch["obs"],
        "agent_pos": policy.normalizer.unnormalize("agent_pos", batch["obs"]["agent_pos"]),
    }
    raw = sample(policy, {**batch, "obs": raw_obs})
    expected = policy.normalizer.unnormalize("action", normalized["action_pred"])
    torch.testing.assert_close(raw["action_pred"], expected, atol=1e-3, rtol=1e-4)
    assert raw["action_pred"][..., 1].min() >= 100.0 and raw["action_pred"][..., 1].max() <= 300.0


def test_the_instruction_changes_the_predicted_actions():
    policy = make_policy().eval()
    batch = make_batch(2)
    red = sample(policy, batch, instructions=["reach the red square"] * 2, normalized=True)["action_pred"]
    blue = sample(policy, batch, instructions=["reach the blue circle"] * 2, normalized=True)["action_pred"]
    assert not torch.allclose(red, blue, atol=1e-4)
    again = sample(policy, batch, instructions=["reach the red square"] * 2, normalized=True)["action_pred"]
    torch.testing.assert_close(red, again)


def test_state_dict_round_trip_reproduces_predictions():
    trained = make_policy(seed=0)
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        trained.compute_loss(make_batch()).backward()
        optimizer.step()
    trained.eval()
    restored = make_policy(seed=1)
    restored.normalizer.set_stats({})  # the stats must come from the checkpoint
    restored.load_state_dict(trained.state_dict())
    restored.eval()
    batch = make_batch(2)
    expected = sample(trained, batch)
    for key, value in sample(restored, batch).items():
        torch.testing.assert_close(value, expected[key])
    assert not torch.allclose(sample(make_policy(seed=1).eval(), batch)["action"], expected["action"])


def test_ddpm_sampling_and_bf16_autocast():
    policy = make_policy(inference_scheduler="ddpm", num_inference_steps=None).eval()
    assert policy.num_inference_steps == 20
    batch = make_batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = policy.compute_loss(batch)
        out = sample(policy, batch, normalized=True)
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert out["action"].dtype == torch.float32 and torch.isfinite(out["action_pred"]).all()


def test_every_parameter_belongs_to_a_named_part():
    """The trainer scales learning rates by these names (training.lr_scale_for_grouped_params)."""
    policy = make_policy()
    parts = {name.split(".")[0] for name, _ in policy.named_parameters()}
    assert parts == {"obs_encoder", "text_encoder", "model"}
    assert {name.split(".")[0] for name, _ in policy.named_buffers()} >= {"normalizer"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon": 15}, "multiple of 2"),
        ({"n_action_steps": 16}, "cannot hold n_obs_steps 2 and n_action_steps 16"),
        ({"inference_scheduler": "euler"}, "inference_scheduler 'euler'"),
        ({"num_inference_steps": 50}, "between 1 and .* 20"),
        ({"prediction_type": "noise"}, "prediction_type 'noise'"),
    ],
)
def test_impossible_settings_are_user_errors(kwargs, message):
    with pytest.raises(LbmError, match=message):
        make_policy(**kwargs)


def test_the_shipped_tiny_config_builds_a_policy_that_trains_and_samples(tmp_path, monkeypatch):
    from lbm.train.compose import compose_config

    monkeypatch.setenv("LBM_DATA_DIR", str(tmp_path))
    cfg = compose_config("train_diffusion_unet_keypoints_lang_tiny")
    policy = instantiate(cfg.policy, _convert_="partial")
    assert isinstance(policy.text_encoder, HashingTextEncoder)
    shape_meta = cfg.task.shape_meta
    size = shape_meta.obs.image.shape[1:]
    batch = {
        "obs": {
            "image": torch.randint(0, 256, (2, cfg.n_obs_steps, 3, *size), dtype=torch.uint8),
            "agent_pos": torch.rand(2, cfg.n_obs_steps, *shape_meta.obs.agent_pos.shape),
        },
        "action": torch.rand(2, cfg.horizon, *shape_meta.action.shape) * 2 - 1,
        "instruction": ["reach the red square", "reach the blue circle"],
    }
    assert torch.isfinite(policy.compute_loss(batch))
    policy.eval()
    out = policy.predict_action(batch["obs"], batch["instruction"], normalized=True)
    assert out["action"].shape == (2, cfg.n_action_steps, *shape_meta.action.shape)


@pytest.mark.slow
def test_sampling_reproduces_the_actions_of_a_memorized_batch():
    policy = make_policy(num_inference_steps=10)
    batch = {**make_batch(), "instruction": ["reach the red square", "reach the blue circle", "go", "stop"]}
    ramp = torch.linspace(-0.8, 0.8, 16).view(1, 16, 1)
    batch["action"] = ramp.repeat(4, 1, 2) * torch.tensor([1.0, -1.0, 0.5, -0.5]).view(4, 1, 1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=2e-3)
    for _ in range(2000):
        optimizer.zero_grad()
        policy.compute_loss(batch).backward()
        optimizer.step()
    policy.eval()
    predicted = sample(policy, batch, normalized=True)["action_pred"]
    error = (predicted - batch["action"]).square().mean(dim=(1, 2))
    assert error.max() < 0.1 * batch["action"].square().mean(), error


def test_with_sample_generators_each_samples_loss_follows_the_sample_not_its_batch():
    policy = make_policy()
    batch = make_batch()
    indices = [40, 41, 42, 43]
    whole = policy.compute_loss(batch, SampleGenerators(5, 1, indices))
    torch.testing.assert_close(whole, policy.compute_loss(batch, SampleGenerators(5, 1, indices)))
    alone = []
    for b, index in enumerate(indices):
        single = {
            "obs": {key: value[b : b + 1] for key, value in batch["obs"].items()},
            "action": batch["action"][b : b + 1],
            "instruction": batch["instruction"][b : b + 1],
        }
        alone.append(policy.compute_loss(single, SampleGenerators(5, 1, [index])))
    torch.testing.assert_close(whole, torch.stack(alone).mean())
    assert not torch.allclose(whole, policy.compute_loss(batch, SampleGenerators(5, 2, indices)))
