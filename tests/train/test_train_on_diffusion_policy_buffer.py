"""`lbm train` on replay buffers that diffusion_policy's ReplayBuffer wrote (zarr format 2 in a `.zarr.zip`,
zarr format 3 in a directory), read as they are through the pusht_image task config or a user's own task
config."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffusion_policy_buffer import push_t_like_episodes, save_as_zip, write_diffusion_policy_buffer

TINY = "train_diffusion_unet_keypoints_lang_tiny"
SHORT = [
    "task.shape_meta.obs.image.shape=[3,32,32]",
    "training.num_epochs=2",
    "dataloader.batch_size=16",
    "training.log_every=2",
    "task.dataset.val_ratio=0.2",
]


def lbm_train(out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lbm.cli.train", "--config-file", TINY, "--output-dir", str(out), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, env=env, text=True, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_trained(out: Path) -> dict:
    """The run's resolved config, after checking it logged finite losses, validated and checkpointed."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(losses) >= 2 and all(math.isfinite(v) for v in losses + val), records
    assert len(val) == 2
    assert list(out.glob("epoch_*-step_*.ckpt")), "no checkpoint written"
    return yaml.safe_load((out / "config.yaml").read_text())


@pytest.fixture(scope="module")
def episodes() -> list[dict]:
    return push_t_like_episodes(num_tasks=2, episodes_per_task=6, image_size=32, seed=2)


@pytest.mark.slow
def test_trains_on_a_zipped_zarr_format_2_buffer_with_the_pusht_image_task(tmp_path, episodes):
    write_diffusion_policy_buffer(tmp_path / "pusht.zarr", episodes, zarr_format=2)
    buffer = save_as_zip(tmp_path / "pusht.zarr", tmp_path / "pusht.zarr.zip")
    out = tmp_path / "run"
    # The tiny config's loader worker reads the zip through its own handle.
    lbm_train(out, "task=pusht_image", f"task.dataset_path={buffer}", "dataloader.num_workers=1", *SHORT)
    config = assert_trained(out)
    assert config["task"]["dataset_path"] == buffer
    assert config["task"]["dataset"]["key_map"] == {"image": "img", "agent_pos": "state[0:2]"}


@pytest.mark.slow
def test_trains_on_a_zarr_format_3_buffer_with_a_task_per_episode_range(tmp_path, episodes):
    buffer = write_diffusion_policy_buffer(tmp_path / "two_tasks.zarr", episodes, zarr_format=3)
    # The user's own task config, made from the shipped one as the README says.
    shipped = Path(__file__).parents[2] / "src/lbm/train/config/task/pusht_image.yaml"
    task = yaml.safe_load(shipped.read_text())
    task["name"] = "two_reach_tasks"
    task["dataset_path"] = buffer
    task["dataset"]["episode_tasks"] = [
        {"task": "reach_red", "instruction": "reach the red square", "episodes": [0, 6]},
        {"task": "reach_green", "instruction": "reach the green circle", "episodes": [6, 12]},
    ]
    (tmp_path / "configs/task").mkdir(parents=True)
    (tmp_path / "configs/task/two_reach_tasks.yaml").write_text(yaml.safe_dump(task))
    out = tmp_path / "run"
    lbm_train(out, "--config-dir", str(tmp_path / "configs"), "task=two_reach_tasks", *SHORT)
    config = assert_trained(out)
    assert [entry["task"] for entry in config["task"]["dataset"]["episode_tasks"]] == [
        "reach_red",
        "reach_green",
    ]
