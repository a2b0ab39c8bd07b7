"""`lbm eval` and rollouts during training, as real processes: a trained checkpoint rolled out in its
task's environment, success in metrics.jsonl and eval.json, videos, checkpoints kept by success, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

TINY = "train_diffusion_unet_keypoints_lang_tiny"
QUICK = [
    "task.synthesize.episodes_per_task=4",
    "dataloader.batch_size=16",
    "val_dataloader.batch_size=32",
    "training.max_train_steps=6",
    "training.log_every=3",
    "checkpoint.every_n_steps=3",
    "task.env_runner.n_test=3",
    "+task.env_runner.env.max_steps=16",
]


def run(*argv: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lbm.cli.main", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, dict]:
    """(output dir, process, environment) of a tiny run that rolls out at its last step and keeps its
    checkpoints by test_mean_score."""
    root = tmp_path_factory.mktemp("trained")
    environment = dict(os.environ, LBM_DATA_DIR=str(root / "data"), OMP_NUM_THREADS="1")
    for name in ("LBM_OUTPUT_DIR", "LBM_ARTIFACT_URI"):
        environment.pop(name, None)
    out = root / "run"
    result = run(
        "train",
        "--config-file",
        TINY,
        "--output-dir",
        str(out),
        *QUICK,
        "checkpoint.monitor_key=test_mean_score",
        "checkpoint.topk=1",
        "logging.mode=offline",
        env=environment,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result, environment


@pytest.mark.slow
def test_training_rolls_out_at_the_end_and_logs_success_per_task(trained):
    out, result, _ = trained
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rolled = [r for r in records if "test_mean_score" in r]
    assert [r["step"] for r in rolled] == [6]
    final = rolled[0]
    # 3 episodes: tasks red, green, blue once each; yellow has none in this run.
    assert set(final) >= {f"test_success_{task}" for task in ("reach_red", "reach_green", "reach_blue")}
    assert "test_success_reach_yellow" not in final
    rates = [final[f"test_success_{task}"] for task in ("reach_red", "reach_green", "reach_blue")]
    assert final["test_mean_score"] == pytest.approx(sum(rates) / 3)
    line = next(line for line in result.stdout.splitlines() if line.startswith("[metrics] step=6 "))
    assert "test_mean_score=" in line and "test_success_reach_red=" in line
    assert any(line.startswith("[rollout] step 6: success rate ") for line in result.stdout.splitlines())
    # The first n_test_vis (2) episodes as GIFs, in the output dir and in the (offline) W&B run.
    gifs = sorted(p.name for p in (out / "rollouts" / "step_6").glob("*.gif"))
    assert [g.split("-")[:2] for g in gifs] == [["episode_000", "reach_red"], ["episode_001", "reach_green"]]
    assert len(list(out.rglob("media/videos/*.gif"))) == 2
    sidecars = {p.name: json.loads(p.read_text()) for p in out.glob("*.ckpt.json")}
    last = sidecars["epoch_0-step_6.ckpt.json"]
    assert last["monitor_key"] == "test_mean_score" and last["score"] == final["test_mean_score"]


@pytest.mark.slow
def test_eval_rolls_out_the_checkpoint_and_writes_eval_json_and_videos(trained, tmp_path):
    out, _, env = trained
    checkpoint = out / "epoch_0-step_6.ckpt"
    result = run(
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--episodes",
        "5",
        "--tasks",
        "reach_blue",
        "reach_red",
        "--seed",
        "7",
        "--video",
        str(tmp_path / "videos"),
        "--output-dir",
        str(tmp_path / "eval"),
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert summary["episodes"] == 5 and summary["seed"] == 7 and summary["ema"] is True
    assert [(e["task"], e["seed"]) for e in summary["per_episode"]] == [
        ("reach_blue", 7),
        ("reach_red", 8),
        ("reach_blue", 9),
        ("reach_red", 10),
        ("reach_blue", 11),
    ]
    assert summary["tasks"]["reach_blue"]["episodes"] == 3
    expected = sum(e["success"] for e in summary["per_episode"]) / 5
    assert summary["success_rate"] == expected and summary["episodes_per_second"] > 0
    for task in ("reach_blue", "reach_red", "overall"):
        assert any(line.split()[:1] == [task] for line in result.stdout.splitlines())
    videos = sorted((tmp_path / "videos").glob("*.gif"))
    assert len(videos) == 5 and videos[0].name.startswith("episode_000-reach_blue-seed_7-")
    with Image.open(videos[0]) as gif:
        assert gif.n_frames == summary["per_episode"][0]["steps"] + 1 and gif.size[0] >= 192


@pytest.mark.slow
def test_eval_bad_input_is_one_line_and_exit_2_writing_nothing(trained, tmp_path):
    out, _, env = trained
    checkpoint = str(out / "epoch_0-step_6.ckpt")
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    cases = [
        (["--checkpoint", str(tmp_path / "missing.ckpt")], "does not exist"),
        (["--checkpoint", checkpoint, "--episodes", "0"], "--episodes must be at least 1"),
        (["--checkpoint", checkpoint, "--seed", "-3"], "--seed must be >= 0"),
        (["--checkpoint", checkpoint, "--tasks", "reach_purple"], "unknown task(s) reach_purple"),
        (["--checkpoint", str(not_a_checkpoint)], "is not an lbm checkpoint"),
    ]
    for argv, message in cases:
        result = run("eval", *argv, "--output-dir", str(tmp_path / "eval"), env=env, cwd=tmp_path)
        assert result.returncode == 2, (argv, result.stderr[-2000:])
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "eval").exists()
