"""Exact resume: `lbm train` killed with kill -9 and run again matches the uninterrupted run, step by step.

Every run uses one torch thread and two DataLoader workers. A run is killed mid-epoch, on an epoch boundary
and while a checkpoint is being written, each at a step drawn at random, resumed, and compared, step by step,
with one uninterrupted run of the same config (the mid-epoch one resumes with one loader worker fewer).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from train_process import lbm_train

from lbm.train import checkpoint as ckpt
from polling import wait_for

STEPS_PER_EPOCH = 8
EVERY = 4  # checkpoints at 4 (mid-epoch), 8 (epoch boundary), 12 (mid-epoch) and 16 (the end)
RUN = [
    "task.synthesize.tasks=2",
    "task.synthesize.episodes_per_task=4",
    "dataloader.batch_size=30",
    "dataloader.num_workers=2",
    "val_dataloader.batch_size=64",
    "training.num_epochs=2",
    "training.lr_warmup_steps=2",
    "training.log_every=1",
    f"checkpoint.every_n_steps={EVERY}",
    "checkpoint.topk=1",
]


def train_until_done(out: Path, env: dict, *overrides: str) -> subprocess.Popen:
    return lbm_train(out, *RUN, *overrides, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_to_end(out: Path, env: dict, *overrides: str) -> str:
    process = train_until_done(out, env, *overrides)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def records(out: Path) -> dict[int, dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines]
    assert len({r["step"] for r in steps}) == len(steps), "a step logged twice"
    return {r["step"]: r for r in steps}


def final_state(out: Path) -> dict:
    newest = ckpt.latest_complete(out)
    assert newest is not None and newest.step == 2 * STEPS_PER_EPOCH
    return ckpt.load_checkpoint(newest.path, newest.sha256)


def logged_steps(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def complete(out: Path, step: int) -> bool:
    return any(
        ckpt.step_of(p.name) == step and ckpt.read_info(p, verify=False) for p in ckpt.checkpoints_in(out)
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("data")
    environment = dict(os.environ, LBM_DATA_DIR=str(data), OMP_NUM_THREADS="1")
    environment.pop("LBM_OUTPUT_DIR", None)
    environment.pop("LBM_ARTIFACT_URI", None)
    return environment


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_to_end(out, env)
    steps = records(out)
    assert sorted(steps) == list(range(1, 2 * STEPS_PER_EPOCH + 1)), "the config's epoch length changed"
    assert steps[STEPS_PER_EPOCH]["epoch"] == 1 and steps[STEPS_PER_EPOCH - 1]["epoch"] == 0
    return out


def kill_mid_epoch(out: Path, process: subprocess.Popen, rng: random.Random) -> int:
    """Kill at a random step strictly inside an epoch, once the mid-epoch checkpoint before it is complete
    (a slow machine may still be writing it a step or two later)."""
    step = rng.choice(
        [EVERY + 1, EVERY + 2, EVERY + 3, STEPS_PER_EPOCH + EVERY + 1, STEPS_PER_EPOCH + EVERY + 2]
    )
    resume_step = step - step % EVERY
    wait_for(
        lambda: process.poll() is not None or (logged_steps(out) >= step and complete(out, resume_step)),
        f"step {step} and the checkpoint at step {resume_step}",
        timeout=300,
    )
    process.send_signal(signal.SIGKILL)
    return resume_step


def kill_on_epoch_boundary(out: Path, process: subprocess.Popen, rng: random.Random) -> int:
    """Kill as soon as the checkpoint at the end of the first epoch is complete."""
    wait_for(
        lambda: process.poll() is not None or complete(out, STEPS_PER_EPOCH), "the epoch-end checkpoint", 300
    )
    process.send_signal(signal.SIGKILL)
    return STEPS_PER_EPOCH


def kill_during_checkpoint_write(out: Path, process: subprocess.Popen, rng: random.Random) -> int:
    """Kill while a randomly chosen checkpoint (after the first) is being written."""
    step = rng.choice([2 * EVERY, 3 * EVERY])
    partial = out / f".{ckpt.checkpoint_name(step // STEPS_PER_EPOCH, step)}.partial"
    wait_for(lambda: process.poll() is not None or partial.exists(), f"{partial.name}", 300, interval=0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not complete(out, step), "the checkpoint write finished before the kill"
    return step - EVERY


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "resume_with"),
    [
        # A sample's draws do not depend on the loader worker that reads it: resume with one worker fewer.
        (kill_mid_epoch, ["dataloader.num_workers=1"]),
        (kill_on_epoch_boundary, []),
        (kill_during_checkpoint_write, []),
    ],
    ids=["mid-epoch", "epoch-boundary", "checkpoint-write"],
)
def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path, env, uninterrupted, kill, resume_with):
    rng = random.Random()
    out = tmp_path / "run"
    process = train_until_done(out, env)
    try:
        resume_step = kill(out, process, rng)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL, "training ended before it was killed"

    stdout = run_to_end(out, env, *resume_with)
    resumed = next(line for line in stdout.splitlines() if line.startswith("resuming from"))
    assert resumed.endswith(f"at step {resume_step}"), resumed

    expected, got = records(uninterrupted), records(out)
    assert not list(out.glob(".*.partial")), "an unfinished checkpoint write was left behind"
    assert sorted(got) == sorted(expected)
    for step in range(resume_step + 1, 2 * STEPS_PER_EPOCH + 1):
        for key in ("train_loss", "val_loss", "lr"):
            assert (key in got[step]) == (key in expected[step]), (step, key)
            if key in expected[step]:
                assert got[step][key] == pytest.approx(expected[step][key], rel=1e-6, abs=0), (step, key)
    want, have = final_state(uninterrupted), final_state(out)
    for part in ("model", "ema"):
        assert want[part].keys() == have[part].keys()
    for name, tensor in want["model"].items():
        assert torch.equal(have["model"][name], tensor), name
    for shadow, resumed_shadow in zip(
        want["ema"]["shadow_params"], have["ema"]["shadow_params"], strict=True
    ):
        assert torch.equal(resumed_shadow, shadow)
