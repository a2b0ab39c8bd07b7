"""Meta-World end to end, as real processes: `lbm data metaworld`, `lbm train` with the MT10 state config
rolling out in Meta-World at its end, and `lbm eval` of its checkpoint there, with videos."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TASKS = ["reach-v3", "button-press-topdown-v3"]


def lbm(*argv: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "lbm.cli.main", *argv], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_a_policy_trained_on_demonstrations_is_rolled_out_and_evaluated_in_meta_world(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    data = tmp_path / "mw.zarr"
    lbm("data", "metaworld", "--out", str(data), "--tasks", *TASKS, "--episodes-per-task", "2", env=env)
    out = tmp_path / "run"
    lbm(
        "train",
        "--config-file",
        "train_diffusion_unet_lang_metaworld_mt10_state",
        "--output-dir",
        str(out),
        f"task.dataset_path={data}",
        "dataloader.batch_size=32",
        "training.max_train_steps=4",
        "task.env_runner.n_test=2",
        "task.env_runner.n_test_vis=0",
        f"task.env_runner.env.tasks=[{','.join(TASKS)}]",
        "task.env_runner.env.max_steps=24",
        env=env,
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if "test_mean_score" in r][-1]
    assert {f"test_success_{task}" for task in TASKS} <= set(final)
    checkpoint = sorted(out.glob("epoch_*-step_*.ckpt"))[-1]

    result = lbm(
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--episodes",
        "2",
        "--tasks",
        "reach-v3",
        "--seed",
        "7",
        "--video",
        str(tmp_path / "videos"),
        "--output-dir",
        str(tmp_path / "eval"),
        env=env,
    )
    summary = json.loads((tmp_path / "eval" / "eval.json").read_text())
    episodes = summary["per_episode"]
    assert [(e["task"], e["seed"]) for e in episodes] == [("reach-v3", 7), ("reach-v3", 8)]
    # An episode ends at success or at the config's step limit.
    assert all(e["steps"] <= 24 and (e["success"] or e["steps"] == 24) for e in episodes)
    assert len(list((tmp_path / "videos").glob("*.gif"))) == 2
    assert "reach-v3" in result.stdout and "episodes/s" in result.stdout
