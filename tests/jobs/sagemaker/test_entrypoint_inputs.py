"""The entry point's inputs: bad hyperparameters, hosts or secrets are one line, exit 2 and the failure file,
before anything trains; the W&B key from Secrets Manager (a moto server); redacted output."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from entrypoint_setup import entrypoint_env, make_tree, run_entrypoint, write_resolved_config

from lbm.errors import LbmError
from lbm.jobs.environment import CONFIG_URI
from lbm.jobs.sagemaker import hyperparameters as hp
from lbm.jobs.sagemaker.entrypoint import (
    JobInputs,
    Stop,
    failure_reason,
    read_inputs,
    run_teed,
    wandb_key_from_secret,
)

KEY = "wandb-key-0123456789abcdef0123456789abcdef"


@pytest.fixture
def config(tmp_path) -> Path:
    return write_resolved_config(tmp_path / "bucket" / "config.yaml", tmp_path / "data")


def refused(tmp_path: Path, opt, env=None) -> str:
    """Run the entry point; it must refuse with one line and exit 2, train nothing, and say why in the
    failure file. Returns the line."""
    result = run_entrypoint(opt, env or entrypoint_env(tmp_path / "data"), timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("lbm sagemaker-entrypoint: error: ")
    assert opt.failure_file.read_text().strip() == lines[0].removeprefix("lbm sagemaker-entrypoint: error: ")
    assert not opt.checkpoints.exists() and not opt.model.exists()
    return lines[0]


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({}, "the job has no config: neither hyperparameter 'config-uri' nor $LBM_CONFIG_URI is set"),
        ({hp.NPROC_PER_NODE: "0"}, "nproc-per-node=0 is not valid: must be 1 to 1024"),
        ({hp.NPROC_PER_NODE: "eight"}, "nproc-per-node='eight' is not valid: must be a whole number"),
        ({hp.RENDEZVOUS_PORT: "70000"}, "rendezvous-port=70000 is not valid: must be 1 to 65535"),
    ],
)
def test_bad_hyperparameters_are_refused(tmp_path, config, hyperparameters, message):
    given = {hp.CONFIG_URI: str(config), **hyperparameters} if hyperparameters else {}
    assert message in refused(tmp_path, make_tree(tmp_path / "opt_ml", given))


def test_a_config_that_is_not_there_is_refused(tmp_path):
    missing = tmp_path / "bucket" / "nowhere" / "config.yaml"
    line = refused(tmp_path, make_tree(tmp_path / "opt_ml", {hp.CONFIG_URI: str(missing)}))
    assert f"cannot fetch the job's config {missing}" in line


def test_a_host_that_is_not_in_the_job_is_refused(tmp_path, config):
    opt = make_tree(
        tmp_path / "opt_ml", {hp.CONFIG_URI: str(config)}, hosts=("algo-1", "algo-2"), current="algo-3"
    )
    assert "current_host 'algo-3' is not one of ['algo-1', 'algo-2']" in refused(tmp_path, opt)


def test_a_missing_input_file_is_refused(tmp_path, config):
    opt = make_tree(tmp_path / "opt_ml", {hp.CONFIG_URI: str(config)})
    opt.resource_config_file.unlink()
    assert "resourceconfig.json is missing" in refused(tmp_path, opt)


def test_escaped_values_are_restored_before_use(config):
    secret_like = "A" * 40
    inputs = read_inputs(
        hp.restore_all(
            {hp.CONFIG_URI: hp.escape_value(str(config)), hp.WANDB_SECRET_ID: hp.escape_value(secret_like)}
        ),
        {},
    )
    assert inputs == JobInputs(str(config), None, secret_like, 29500)


def test_the_config_uri_comes_from_the_job_environment_without_its_hyperparameter(config):
    assert read_inputs({}, {CONFIG_URI: str(config)}).config_uri == str(config)
    assert (
        read_inputs({hp.CONFIG_URI: "s3://b/c.yaml"}, {CONFIG_URI: str(config)}).config_uri == "s3://b/c.yaml"
    )


def test_unknown_hyperparameters_are_named_not_fatal(config):
    assert read_inputs({hp.CONFIG_URI: str(config), "sagemaker_program": "x"}, {}).ignored == (
        "sagemaker_program",
    )


@pytest.fixture
def secrets(moto_endpoint):
    return boto3.client("secretsmanager", region_name="us-east-1")


def test_the_wandb_key_is_read_from_its_secret(secrets):
    plain = secrets.create_secret(Name=f"lbm/wandb-{uuid.uuid4().hex}", SecretString=KEY)
    assert wandb_key_from_secret(plain["Name"]) == KEY
    assert wandb_key_from_secret(plain["ARN"]) == KEY
    fields = secrets.create_secret(
        Name=f"lbm/wandb-{uuid.uuid4().hex}", SecretString=json.dumps({"WANDB_API_KEY": KEY})
    )
    assert wandb_key_from_secret(fields["Name"]) == KEY


def test_a_secret_named_without_its_region_is_read_in_the_containers_region(secrets, monkeypatch):
    plain = secrets.create_secret(Name=f"lbm/wandb-{uuid.uuid4().hex}", SecretString=KEY)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # what SageMaker sets
    assert wandb_key_from_secret(plain["Name"]) == KEY


def test_an_unreadable_secret_is_one_line(secrets):
    with pytest.raises(
        LbmError,
        match="cannot read the W&B key from Secrets Manager secret 'lbm/none': ResourceNotFoundException",
    ):
        wandb_key_from_secret("lbm/none")
    other = secrets.create_secret(
        Name=f"lbm/other-{uuid.uuid4().hex}", SecretString=json.dumps({"token": KEY})
    )
    with pytest.raises(LbmError, match="without a WANDB_API_KEY string") as raised:
        wandb_key_from_secret(other["Name"])
    assert KEY not in str(raised.value)


def test_a_missing_secret_stops_the_job_before_training(tmp_path, config, moto_endpoint):
    opt = make_tree(tmp_path / "opt_ml", {hp.CONFIG_URI: str(config), hp.WANDB_SECRET_ID: "lbm/absent"})
    assert "ResourceNotFoundException" in refused(tmp_path, opt, entrypoint_env(tmp_path / "data"))


def test_output_is_copied_to_the_log_with_secrets_redacted(tmp_path, capfd):
    log = tmp_path / "logs" / "algo-1.log"
    command = [sys.executable, "-c", f"print('key: {KEY}'); print('ValueError: bad'); raise SystemExit(3)"]
    code, tail = run_teed(command, {"PATH": "/usr/bin:/bin"}, log, [KEY], Stop())
    assert code == 3
    assert log.read_text() == "key: [REDACTED]\nValueError: bad\n"
    assert capfd.readouterr().out == log.read_text()
    assert (
        failure_reason(code, tail, "algo-1")
        == "lbm train failed on algo-1 with exit status 3: ValueError: bad"
    )


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        (["--help"], 0, "usage: lbm sagemaker-entrypoint [train]"),
        (["serve"], 2, "unexpected arguments 'serve': SageMaker starts the image with `train` only"),
    ],
)
def test_the_command_is_registered_and_takes_only_train(tmp_path, args, status, expected):
    lbm = str(Path(sys.executable).with_name("lbm"))
    env = entrypoint_env(tmp_path / "data", LBM_SAGEMAKER_ROOT=str(tmp_path / "opt_ml"))
    result = subprocess.run(
        [lbm, "sagemaker-entrypoint", *args], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == status and expected in result.stdout + result.stderr
    assert not (tmp_path / "opt_ml").exists()


@pytest.mark.slow
def test_a_training_failure_is_the_failure_files_reason(tmp_path):
    config = write_resolved_config(
        tmp_path / "bucket" / "config.yaml",
        tmp_path / "data",
        "task.synthesize=null",
        f"task.dataset_path={tmp_path / 'absent.zarr'}",
    )
    opt = make_tree(tmp_path / "opt_ml", {hp.CONFIG_URI: str(config), hp.NPROC_PER_NODE: "1"})
    result = run_entrypoint(opt, entrypoint_env(tmp_path / "data"), timeout=300)
    assert result.returncode == 1, result.stderr
    reason = opt.failure_file.read_text().strip()
    assert reason.startswith("lbm train failed on algo-1 with exit status 1: lbm train: error: "), reason
    assert str(tmp_path / "absent.zarr") in reason
    error = reason.split("exit status 1: ", 1)[1]
    assert error in (opt.output_data / "logs" / "algo-1.log").read_text().splitlines()
    assert not opt.model.exists()
