"""The entry point for real, on fake `/opt/ml` trees: two hosts as two processes on 127.0.0.1, a retry that
resumes from the checkpoint SageMaker restored (against the uninterrupted run), SageMaker's stop (SIGTERM),
and the W&B key from Secrets Manager (a moto server) reaching the trainer and no file."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import boto3
import psutil
import pytest
import torch
from entrypoint_setup import (
    entrypoint_env,
    job_environment_of,
    make_tree,
    metrics_of,
    run_entrypoint,
    start_entrypoint,
    write_resolved_config,
)

from lbm.jobs.environment import ARTIFACT_URI, OUTPUT_DIR
from lbm.jobs.sagemaker import hyperparameters as hp
from lbm.storage.layout import config_uri
from lbm.train import checkpoint as ckpt
from polling import wait_for
from ports import free_port

# Validation and a kept checkpoint every 4 steps, so a retry can resume from any of them.
RESUMABLE = ("training.val_per_step=true", "training.val_every=4", "checkpoint.topk=100")
KEY = "wandb-key-0123456789abcdef0123456789abcdef"
# Longer than any test waits, with no checkpoint falling due: the only checkpoint is the one a stop writes.
UNTIL_STOPPED = ("training.num_epochs=100", "checkpoint.every_n_steps=100000")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    """One host trained to the end, with one process: as many as it has GPUs, at least one."""
    root = tmp_path_factory.mktemp("uninterrupted")
    config = write_resolved_config(root / "bucket" / "config.yaml", data_dir, *RESUMABLE)
    opt = make_tree(root / "opt_ml", {hp.CONFIG_URI: str(config)})
    result = run_entrypoint(opt, entrypoint_env(data_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "host algo-1 (1 of 1), attempt 0: nproc-per-node 1, rendezvous on algo-1" in result.stdout
    return opt


def final_weights(model_dir) -> dict:
    (path,) = model_dir.glob("*.ckpt")
    return ckpt.load_checkpoint(path)["model"]


@pytest.mark.slow
def test_one_host_writes_checkpoints_outputs_and_model(uninterrupted):
    opt = uninterrupted
    steps = metrics_of(opt.output_data)
    assert steps == metrics_of(opt.checkpoints)
    newest = ckpt.latest_complete(opt.checkpoints)
    assert newest.step == max(steps)
    assert sorted(p.name for p in opt.model.iterdir()) == sorted(
        ["config.yaml", newest.path.name, newest.sidecar.name]
    )
    assert ckpt.read_info(opt.model / newest.path.name) is not None
    assert "[metrics] step=" in (opt.output_data / "logs" / "algo-1.log").read_text()
    assert not opt.failure_file.exists()


PIPED = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
HOSTS = ("127.0.0.1", "localhost")  # SageMaker's algo-1 and algo-2, with names that resolve here


def two_hosts(tmp_path, uri: str) -> list:
    """The `/opt/ml` trees of a two-host job, one process each, meeting on a free port of the first."""
    given = {hp.CONFIG_URI: uri, hp.NPROC_PER_NODE: "1", hp.RENDEZVOUS_PORT: str(free_port())}
    return [make_tree(tmp_path / f"host-{i}", given, HOSTS, host, "lo") for i, host in enumerate(HOSTS)]


def logged_steps(opt) -> list[int]:
    """The steps in the checkpoint folder's metrics.jsonl so far."""
    path = opt.checkpoints / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_two_hosts_train_one_job_rendezvousing_on_the_first(tmp_path, data_dir, uninterrupted, s3_bucket):
    bucket, _ = s3_bucket
    config = write_resolved_config(tmp_path / "config.yaml", data_dir, *RESUMABLE)
    uri = f"{bucket}/outputs/someone-lbm/job/config.yaml"
    bucket_name, key = uri.removeprefix("s3://").split("/", 1)
    boto3.client("s3").upload_file(str(config), bucket_name, key)
    trees = two_hosts(tmp_path, uri)
    processes = [start_entrypoint(opt, entrypoint_env(data_dir), **PIPED) for opt in trees]
    try:
        outputs = [process.communicate(timeout=600)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    first, second = trees
    assert "host 127.0.0.1 (1 of 2), attempt 0: nproc-per-node 1, rendezvous on 127.0.0.1" in outputs[0]
    assert "host localhost (2 of 2), attempt 0: nproc-per-node 1, rendezvous on 127.0.0.1" in outputs[1]
    steps = metrics_of(first.output_data)
    # Two processes share each epoch: half the steps of the one-process run.
    assert max(steps) == max(metrics_of(uninterrupted.output_data)) // 2
    assert ckpt.latest_complete(first.checkpoints).step == max(steps)
    assert not ckpt.checkpoints_in(second.checkpoints) and not (second.checkpoints / "metrics.jsonl").exists()
    assert list(first.model.glob("*.ckpt")) and not second.model.exists()
    assert "[metrics] step=" in (first.output_data / "logs" / "127.0.0.1.log").read_text()
    assert (second.output_data / "logs" / "localhost.log").is_file()


@pytest.mark.slow
def test_a_retry_resumes_from_the_restored_checkpoint_as_if_never_stopped(tmp_path, data_dir, uninterrupted):
    done = uninterrupted
    restored = next(c for c in ckpt.checkpoints_in(done.checkpoints) if ckpt.step_of(c.name) == 16)
    config = write_resolved_config(tmp_path / "bucket" / "config.yaml", data_dir, *RESUMABLE)
    opt = make_tree(tmp_path / "opt_ml", {hp.CONFIG_URI: str(config), hp.NPROC_PER_NODE: "1"})
    # What SageMaker restores from the job's folder: a checkpoint, and the metrics the first attempt synced.
    opt.checkpoints.mkdir(parents=True)
    for path in (
        restored,
        restored.with_name(restored.name + ckpt.SIDECAR_SUFFIX),
        done.checkpoints / "metrics.jsonl",
        done.attempts_file,
    ):
        shutil.copy2(path, opt.checkpoints / path.name)

    result = run_entrypoint(opt, entrypoint_env(data_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {restored.name} at step 16" in result.stdout
    assert "(1 of 1), attempt 1:" in result.stdout  # the first attempt counted itself in
    expected, got = metrics_of(done.output_data), metrics_of(opt.output_data)
    assert sorted(got) == sorted(expected)
    for step in (s for s in expected if s > 16):
        for key in ("train_loss", "val_loss", "lr"):
            assert (key in got[step]) == (key in expected[step]), (step, key)
            if key in expected[step]:
                assert got[step][key] == pytest.approx(expected[step][key], rel=1e-6, abs=0), (step, key)
    want, have = final_weights(done.model), final_weights(opt.model)
    assert want.keys() == have.keys()
    for name, tensor in want.items():
        assert torch.equal(have[name], tensor), name


@pytest.mark.slow
def test_sigterm_checkpoints_and_writes_the_failure_file(tmp_path, data_dir):
    artifacts = f"{tmp_path}/bucket/someone-lbm/someone-lbm-training-test/"
    write_resolved_config(Path(config_uri(artifacts)), data_dir, *UNTIL_STOPPED)
    # The config's URI from the job's environment, as every backend gives it, not from a hyperparameter.
    opt = make_tree(tmp_path / "opt_ml", {hp.NPROC_PER_NODE: "1"})
    env = entrypoint_env(data_dir, **job_environment_of(artifacts))
    process = start_entrypoint(opt, env, **PIPED)
    try:
        wait_for(lambda: process.poll() is not None or len(logged_steps(opt)) >= 2, "two logged steps", 300)
        logged = max(logged_steps(opt))
        started = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=120)[0]
    finally:
        process.kill()
    assert process.returncode == 143, output[-3000:]
    newest = ckpt.latest_complete(opt.checkpoints)
    assert newest is not None and newest.step >= logged
    assert opt.failure_file.read_text().strip() == (
        f"stopped by SIGTERM; newest checkpoint: {newest.path.name} (step {newest.step})"
    )
    assert "lbm sagemaker-entrypoint: SIGTERM: stopping training" in output
    assert f"stopped at step {newest.step}" in output
    assert max(metrics_of(opt.output_data)) <= newest.step
    assert not opt.model.exists()
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_sigterm_to_every_host_stops_them_together_at_one_checkpoint(tmp_path, data_dir):
    config = write_resolved_config(tmp_path / "config.yaml", data_dir, *UNTIL_STOPPED)
    trees = two_hosts(tmp_path, str(config))
    first, second = trees
    processes = [start_entrypoint(opt, entrypoint_env(data_dir), **PIPED) for opt in trees]
    try:
        wait_for(
            lambda: any(p.poll() is not None for p in processes) or len(logged_steps(first)) >= 2,
            "two logged steps",
            timeout=300,
        )
        logged = max(logged_steps(first))
        for process in processes:  # SageMaker's stop reaches every host
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=120)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [p.returncode for p in processes] == [143, 143], outputs[0][-3000:] + outputs[1][-3000:]
    newest = ckpt.latest_complete(first.checkpoints)
    assert newest is not None and newest.step >= logged
    assert first.failure_file.read_text().strip() == (
        f"stopped by SIGTERM; newest checkpoint: {newest.path.name} (step {newest.step})"
    )
    assert len(ckpt.checkpoints_in(first.checkpoints)) == 1 and not ckpt.checkpoints_in(second.checkpoints)
    assert second.failure_file.read_text().strip() == "stopped by SIGTERM"
    assert f"stopped at step {newest.step}" in outputs[0]


def trainer_environment(process: subprocess.Popen) -> dict | None:
    """The environment of the `lbm train` process under the entry point, once it runs."""
    try:
        for child in psutil.Process(process.pid).children(recursive=True):
            if "lbm.cli.train" in child.cmdline():
                return child.environ()
    except psutil.NoSuchProcess:
        return None
    return None


@pytest.mark.slow
def test_the_wandb_key_from_secrets_manager_reaches_the_trainer_and_no_file(
    tmp_path, data_dir, moto_endpoint
):
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"lbm/wandb-{uuid.uuid4().hex}", SecretString=KEY
    )
    config = write_resolved_config(tmp_path / "bucket" / "config.yaml", data_dir, "logging.mode=offline")
    given = {hp.CONFIG_URI: str(config), hp.NPROC_PER_NODE: "1", hp.WANDB_SECRET_ID: secret["ARN"]}
    opt = make_tree(tmp_path / "opt_ml", given)
    # The job's artifact folder: SageMaker syncs the checkpoint folder there, so the trainer must not.
    artifacts = tmp_path / "artifacts"
    env = entrypoint_env(data_dir, WANDB_SILENT="true", **job_environment_of(f"file://{artifacts}/"))
    process = start_entrypoint(opt, env, **PIPED)
    try:
        trainer = wait_for(
            lambda: process.poll() is not None or trainer_environment(process), "the trainer", 300
        )
        output = process.communicate(timeout=600)[0]
    finally:
        process.kill()
    assert process.returncode == 0, output[-3000:]
    assert isinstance(trainer, dict) and trainer.get("WANDB_API_KEY") == KEY
    assert ARTIFACT_URI not in trainer and trainer[OUTPUT_DIR] == str(opt.checkpoints)
    assert not artifacts.exists()
    assert f"W&B key: from Secrets Manager secret {secret['ARN']}" in output
    assert list((opt.output_data / "wandb").glob("offline-run-*"))
    files = [p for p in opt.root.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in output
