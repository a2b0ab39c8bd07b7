"""`lbm train` as a real process: training, kill -9 and resume, corrupt checkpoints, DDP, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.utils import instantiate
from train_process import QUICK, TINY, lbm_train

from lbm.train.compose import compose_config


def run_to_end(out: Path, *overrides: str, env: dict) -> subprocess.CompletedProcess:
    process = lbm_train(out, *overrides, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.stem.split("step_")[1]) for p in out.glob("epoch_*-step_*.ckpt"))


@pytest.fixture
def env(tmp_path):
    environment = dict(os.environ, LBM_DATA_DIR=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    environment.pop("LBM_OUTPUT_DIR", None)
    environment.pop("LBM_ARTIFACT_URI", None)
    return environment


@pytest.mark.slow
def test_tiny_config_trains_two_epochs_and_val_loss_falls(tmp_path, env):
    out = tmp_path / "run"
    smaller = ("task.synthesize.episodes_per_task=12", "training.num_epochs=2", "task.env_runner.n_test=2")
    result = run_to_end(out, *smaller, env=env)
    records = metrics(out)
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(val) == 2, records
    assert val[-1] < val[0]
    assert {r["epoch"] for r in records} >= {0, 1}
    lines = [line for line in result.stdout.splitlines() if line.startswith("[metrics] ")]
    assert len(lines) == len(records)
    assert (out / "config.yaml").exists()
    assert checkpoint_steps(out), "no checkpoint written"
    assert str(out) in result.stdout.splitlines()[-1]


@pytest.mark.slow
def test_kill_9_after_first_checkpoint_then_rerun_resumes(tmp_path, env):
    out = tmp_path / "run"
    process = lbm_train(out, *QUICK, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob("epoch_*-step_*.ckpt.json")):
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first_checkpoint = checkpoint_steps(out)[-1]

    result = run_to_end(out, *QUICK, env=env)
    resumed_line = next(line for line in result.stdout.splitlines() if line.startswith("resuming from"))
    assert f"at step {first_checkpoint}" in resumed_line
    steps = [r["step"] for r in metrics(out)]
    assert len(steps) == len(set(steps)), steps
    assert steps == sorted(steps)
    assert max(steps) > first_checkpoint


@pytest.mark.slow
def test_corrupt_newest_checkpoint_is_skipped_for_the_previous(tmp_path, env):
    out = tmp_path / "run"
    ranked = ["training.val_per_step=true", "training.val_every=4", "checkpoint.topk=10"]
    run_to_end(out, *QUICK, *ranked, "training.num_epochs=1", env=env)
    steps = checkpoint_steps(out)
    assert len(steps) >= 2
    newest = next(out.glob(f"epoch_*-step_{steps[-1]}.ckpt"))
    newest.write_bytes(newest.read_bytes()[:1000])

    result = run_to_end(out, *QUICK, *ranked, "training.num_epochs=2", env=env)
    assert f"skipping checkpoint {newest.name}" in result.stdout
    assert f"at step {steps[-2]}" in result.stdout


@pytest.mark.slow
def test_two_process_ddp_on_cpu_writes_one_set_of_outputs(tmp_path, env):
    out = tmp_path / "run"
    process = lbm_train(
        out,
        "--nproc-per-node",
        "2",
        *QUICK,
        "training.num_epochs=1",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    records = metrics(out)
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps))
    assert stdout.count("[metrics] ") == len(records)
    assert checkpoint_steps(out)
    assert len(list(out.glob("config.yaml"))) == 1


def bad_input(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    out = tmp_path / "never"
    command = [sys.executable, "-m", "lbm.cli.train", "--output-dir", str(out), *args]
    result = subprocess.run(command, env=env, text=True, capture_output=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    return result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # The tiny config's name before it named its image model.
        (["--config-file", TINY.replace("keypoints", "resnet")], f"did you mean {TINY!r}?"),
        (["--config-file", TINY, "training.num_epochs=[2"], "malformed override"),
        (["--config-file", TINY, "training.epochs=2"], "has no key training.epochs"),
        (["--config-file", TINY, "dataloader.batch_size=sixty"], "must be a whole number"),
        (["--config-file", TINY, "training.resume_checkpoint_path=/nonexistent/x.ckpt"], "does not exist"),
        (["--config-file", TINY, "logging.mode=verbose"], "logging.mode='verbose' is not valid"),
        (["--config-file", TINY, "dataloader.batch_size=-5"], "dataloader.batch_size=-5 is not valid"),
        (["--config-file", TINY, "horizon=4"], "horizon=4 is too short for n_obs_steps=2"),
        (["--config-file", TINY, "--nproc-per-node", "0"], "argument --nproc-per-node: must be 1 or more"),
        (
            ["--config-file", TINY, "policy.obs_encoder.rgb_model.weights=IMAGENET1K_V1"],
            "no pretrained weights",
        ),
        (
            ["--config-file", TINY, "checkpoint.monitor_key=val_los"],
            "checkpoint.monitor_key='val_los' is not valid: must be val_loss, test_mean_score",
        ),
        (["--config-file", TINY, "checkpoint.mode=best"], "checkpoint.mode='best' is not valid"),
        (
            ["--config-file", TINY, "checkpoint.monitor_key=test_mean_score", "task.env_runner=null"],
            "needs rollouts",
        ),
        (
            ["--config-file", TINY, "task.env_runner.n_test=0"],
            "task.env_runner.n_test=0 is not valid: must be >= 1",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, env, args, message):
    assert message in bad_input(tmp_path, env, *args).stderr


MT10_STATE = "train_diffusion_unet_lang_metaworld_mt10_state"


@pytest.mark.parametrize(
    ("config", "overrides", "says"),
    [
        (
            TINY,
            ["task.synthesize=null"],
            "the dataset of the synthetic task synthetic_reach_tiny: make it with "
            "`lbm data synth --out {url} --tasks 4 --image-size 32`",
        ),
        (
            MT10_STATE,
            ["task.env_runner.env.tasks=[reach-v3]"],
            "the dataset of the Meta-World task metaworld_mt10_state: make it with "
            "`lbm data metaworld --out {url} --tasks reach-v3`",
        ),
        (
            TINY,
            ["task=pusht_image"],
            "where task.dataset_path of task pusht_image points: that buffer is your own (lbm makes only "
            "the synthetic and Meta-World ones), so check the path or set "
            "task.dataset_path=<its local path or URL>",
        ),
    ],
)
def test_a_missing_buffer_is_one_line_that_fits_the_task(tmp_path, env, config, overrides, says):
    url = str(tmp_path / "data" / "demos.zarr")
    overrides = [*overrides, f"task.dataset_path={url}"]
    result = bad_input(tmp_path, env, "--config-file", config, *overrides)
    assert result.stderr == f"lbm train: error: no replay buffer at {url}, {says.format(url=url)}\n"
    assert not (tmp_path / "data").exists()
    if "`" not in says:
        return
    # The command it names makes the buffer the config reads.
    command = result.stderr.split("`")[1].split()
    assert command[:2] == ["lbm", "data"]
    made = subprocess.run([sys.executable, "-m", "lbm.cli.main", *command[1:]], env=env, capture_output=True)
    assert made.returncode == 0, made.stderr
    cfg = compose_config(config, overrides)
    assert len(instantiate(cfg.task.dataset, _convert_="partial")) > 0


def test_missing_pretrained_weights_name_what_is_missing(tmp_path, env):
    env = dict(env, TORCH_HOME=str(tmp_path / "torch"), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    resnet = "policy.obs_encoder.rgb_model._target_=lbm.train.models.vision.get_resnet"
    result = bad_input(
        tmp_path, env, "--config-file", TINY, resnet, "policy.obs_encoder.rgb_model.weights=IMAGENET1K_V1"
    )
    assert "resnet18" in result.stderr and str(tmp_path / "torch") in result.stderr


@pytest.mark.slow
def test_fresh_machine_resumes_from_checkpoints_uploaded_to_s3(tmp_path, env, s3_bucket):
    bucket, _ = s3_bucket
    artifacts = f"{bucket}/outputs/someone-lbm/run-1"
    env = dict(env, **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")})
    first = tmp_path / "machine-a"
    run_to_end(first, "--artifact-uri", artifacts, *QUICK, "training.num_epochs=1", env=env)
    uploaded = checkpoint_steps(first)[-1]
    import fsspec

    fs, root = fsspec.core.url_to_fs(artifacts)
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(root)}
    assert {"config.yaml", "metrics.jsonl", f"epoch_1-step_{uploaded}.ckpt"} <= names

    second = tmp_path / "machine-b"  # an empty output dir: the checkpoint comes from the bucket
    result = run_to_end(second, "--artifact-uri", artifacts, *QUICK, "training.num_epochs=2", env=env)
    assert f"at step {uploaded}" in result.stdout
    assert max(r["step"] for r in metrics(second)) > uploaded


@pytest.mark.slow
def test_wandb_offline_run_is_written_without_the_key(tmp_path, env):
    out = tmp_path / "run"
    key = "fake-wandb-key-0123456789abcdef0123456789abcdef"
    env = dict(env, WANDB_API_KEY=key, WANDB_SILENT="true")
    run_to_end(out, *QUICK, "training.num_epochs=1", "logging.mode=offline", "logging.name=unit-run", env=env)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs, list(out.iterdir())
    for path in out.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
