"""Sampled-action error and closed-loop success of a recipe after N steps, against the trivial baselines.

Trains the tiny config with the given overrides for `--steps` optimizer steps (the policy's own loss, AdamW,
cosine schedule with warmup, EMA as configured; one torch thread), then on 128 held-out windows reports the
MSE (normalized units) of actions sampled by the EMA policy with the config's DDIM steps and with DDPM over
all training timesteps, beside predicting the batch's mean action and holding the current position; and,
with `--rollouts`, the success rate of the EMA policy over the config's 50 held-out rollout episodes.

    python benchmarks/policy_diagnosis.py --steps 300 \
        policy.obs_encoder.rgb_model._target_=lbm.train.models.vision.get_resnet \
        policy.noise_scheduler.prediction_type=epsilon \
        task.synthesize.episodes_per_task=12                      # the old tiny recipe
    python benchmarks/policy_diagnosis.py --steps 1000 --rollouts   # the tiny recipe as shipped
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile

import torch


def train(cfg, steps: int):
    """(policy, EMA policy, dataset) after `steps` steps of the config's recipe."""
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from lbm.train.distributed import Distributed
    from lbm.train.trainer import build, prepare_dataset

    torch.manual_seed(0)
    policy = build(cfg.policy)
    prepare_dataset(cfg.task, Distributed.from_env())
    dataset = build(cfg.task.dataset)
    policy.set_normalizer(dataset.normalizer_stats())
    e = cfg.ema
    ema = EMAModel(
        policy.parameters(), decay=e.max_value, min_decay=e.min_value, use_ema_warmup=True,
        inv_gamma=e.inv_gamma, power=e.power,
    )  # fmt: skip
    optimizer = torch.optim.AdamW(
        policy.parameters(), lr=cfg.optimizer.lr, betas=(0.95, 0.999), weight_decay=1e-6
    )
    warmup = int(cfg.training.lr_warmup_steps)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.dataloader.batch_size, shuffle=True, drop_last=True
    )
    step = 0
    while step < steps:
        for batch in loader:
            loss = policy.compute_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            ema.step(policy.parameters())
            step += 1
            if step == steps:
                break
    ema_policy = copy.deepcopy(policy)
    ema.copy_to(ema_policy.parameters())
    return policy.eval(), ema_policy.eval(), dataset


def sampled_errors(policy, dataset) -> dict[str, float]:
    """MSE of sampled actions (config's sampler, and DDPM over all timesteps) and of the two baselines."""
    from diffusers import DDPMScheduler

    val = dataset.get_validation_dataset()
    generator = torch.Generator().manual_seed(0)
    batch = torch.utils.data.default_collate(
        [val[int(i)] for i in torch.randperm(len(val), generator=generator)[:128]]
    )
    action = batch["action"]
    stats = {k: {s: torch.as_tensor(v) for s, v in d.items()} for k, d in dataset.normalizer_stats().items()}
    pos, pos_stats, act_stats = batch["obs"]["agent_pos"][:, -1], stats["agent_pos"], stats["action"]
    raw_pos = (pos + 1) / 2 * (pos_stats["max"] - pos_stats["min"]) + pos_stats["min"]
    held = (raw_pos - (act_stats["min"] + act_stats["max"]) / 2) / ((act_stats["max"] - act_stats["min"]) / 2)
    errors = {
        "mean action": ((action - action.mean((0, 1), keepdim=True)) ** 2).mean().item(),
        "hold still": ((action - held[:, None]) ** 2).mean().item(),
    }
    with torch.no_grad():
        sample = policy.predict_action(
            batch["obs"], batch["instruction"], torch.Generator().manual_seed(0), True
        )
        errors["sampled"] = ((sample["action_pred"] - action) ** 2).mean().item()
        ddpm = copy.deepcopy(policy)
        ddpm.inference_scheduler = DDPMScheduler.from_config(policy.noise_scheduler.config)
        ddpm.num_inference_steps = policy.noise_scheduler.config.num_train_timesteps
        sample = ddpm.predict_action(
            batch["obs"], batch["instruction"], torch.Generator().manual_seed(0), True
        )
        errors["sampled, DDPM all steps"] = ((sample["action_pred"] - action) ** 2).mean().item()
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rollouts", action="store_true", help="also the closed-loop success rate")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the tiny config")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from hydra.utils import instantiate

    from lbm.envs.actors import PolicyActor
    from lbm.envs.rollout import run_episodes
    from lbm.train.compose import compose_config

    with tempfile.TemporaryDirectory(prefix="lbm-policy-diagnosis-") as data_dir:
        os.environ.setdefault("LBM_DATA_DIR", data_dir)
        cfg = compose_config("train_diffusion_unet_keypoints_lang_tiny", args.overrides)
        _, ema_policy, dataset = train(cfg, args.steps)
        result = {"steps": args.steps, "overrides": args.overrides, **sampled_errors(ema_policy, dataset)}
        if args.rollouts:
            runner = cfg.task.env_runner
            seed = int(runner.test_start_seed)
            with torch.no_grad():
                evaluation = run_episodes(
                    instantiate(runner.env), PolicyActor(ema_policy, seed), episodes=int(runner.n_test),
                    start_seed=seed, tasks=list(cfg.task.dataset.tasks) if cfg.task.dataset.tasks else None,
                )  # fmt: skip
            result["closed-loop success"] = evaluation.success_rate
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
