"""The tiny recipe learns to act: after a bounded number of steps on a small fixed dataset, its sampled
actions on held-out episodes beat the trivial baselines (predicting the mean action, holding still).

Before the fix (a ResNet whose global pool discards where the goal is, noise prediction, 48 episodes) the
sampled trajectories were no better than the mean action after 20 epochs.
"""

from __future__ import annotations

import pytest
import torch

from lbm.train.compose import compose_config
from lbm.train.trained_policy import load_policy
from lbm.train.trainer import Trainer

STEPS = 600


def baseline_errors(batch: dict, stats: dict) -> dict[str, float]:
    """Normalized-action MSE of predicting the batch's mean action and of holding the current position."""
    action = batch["action"]
    mean = ((action - action.mean((0, 1), keepdim=True)) ** 2).mean().item()
    pos = batch["obs"]["agent_pos"][:, -1]
    low, high = (torch.as_tensor(stats["agent_pos"][k]) for k in ("min", "max"))
    raw_pos = (pos + 1) / 2 * (high - low) + low
    a_low, a_high = (torch.as_tensor(stats["action"][k]) for k in ("min", "max"))
    held = (raw_pos - (a_low + a_high) / 2) / ((a_high - a_low) / 2)
    return {"mean": mean, "hold": ((action - held[:, None]) ** 2).mean().item()}


@pytest.mark.slow
def test_sampled_actions_beat_the_mean_action_and_holding_still(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("LBM_DATA_DIR", str(tmp_path / "data"))
    cfg = compose_config(
        "train_diffusion_unet_keypoints_lang_tiny",
        [
            f"training.max_train_steps={STEPS}",
            "task.synthesize.episodes_per_task=50",
            "task.dataset.val_ratio=0.1",
            "training.val_every=1000",
            "task.env_runner.n_test=1",
            "dataloader.num_workers=0",
        ],
    )
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.run() == 0
    val = trainer.val_dataset
    batch = torch.utils.data.default_collate([val[i] for i in range(0, len(val), max(len(val) // 256, 1))])
    policy, _ = load_policy(str(next((tmp_path / "run").glob(f"*-step_{STEPS}.ckpt"))))
    generator = torch.Generator().manual_seed(0)
    sampled = policy.predict_action(batch["obs"], batch["instruction"], generator=generator, normalized=True)
    error = ((sampled["action_pred"] - batch["action"]) ** 2).mean().item()
    baselines = baseline_errors(batch, trainer.dataset.normalizer_stats())
    assert error < 0.9 * baselines["hold"] and error < 0.3 * baselines["mean"], (error, baselines)
