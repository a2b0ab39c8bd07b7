"""Helpers for entry-point tests: a fake `/opt/ml` tree per host, the job's resolved config, the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from lbm.jobs.environment import ARTIFACT_URI, CONFIG_URI, OUTPUT_DIR, job_environment
from lbm.jobs.model import JobSpec
from lbm.jobs.sagemaker.hyperparameters import escape_value
from lbm.jobs.sagemaker.opt_ml import ROOT_ENV, OptMl
from lbm.storage.layout import config_uri
from train.train_process import QUICK as TRAINING_QUICK
from train.train_process import TINY

# A short run of the tiny config: 34 steps an epoch on one process, one epoch.
QUICK = (*TRAINING_QUICK, "training.num_epochs=1")


def write_resolved_config(path: Path, data_dir: Path, *overrides: str) -> Path:
    """The tiny config composed with `overrides` and saved as YAML, as `lbm launch` stores a job's config."""
    from lbm.train.compose import compose_config, to_yaml

    dataset = f"task.dataset_path={data_dir / 'tiny.zarr'}"
    cfg = compose_config(TINY, [*QUICK, dataset, "logging.name=someone-lbm-training-test", *overrides])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(cfg))
    return path


def make_tree(
    root: Path,
    hyperparameters: Mapping[str, str],
    hosts: Sequence[str] = ("algo-1",),
    current: str | None = None,
    network_interface: str | None = None,
) -> OptMl:
    """A `/opt/ml` tree as SageMaker gives a host: escaped hyperparameters and its resourceconfig.json."""
    opt = OptMl(root)
    opt.hyperparameters_file.parent.mkdir(parents=True, exist_ok=True)
    escaped = {name: escape_value(value) for name, value in hyperparameters.items()}
    opt.hyperparameters_file.write_text(json.dumps(escaped))
    resources = {"current_host": current or hosts[0], "hosts": list(hosts)}
    if network_interface:
        resources["network_interface_name"] = network_interface
    opt.resource_config_file.write_text(json.dumps(resources))
    return opt


def entrypoint_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment for an entry point: no GPU, one torch thread, no W&B key or job
    variables."""
    env = dict(
        os.environ,
        LBM_DATA_DIR=str(data_dir),
        OMP_NUM_THREADS="1",
        NETRC="/dev/null",
        CUDA_VISIBLE_DEVICES="",
    )
    for name in ("WANDB_API_KEY", ARTIFACT_URI, OUTPUT_DIR, CONFIG_URI, ROOT_ENV):
        env.pop(name, None)
    return dict(env, **extra)


def job_environment_of(artifact_uri: str) -> dict[str, str]:
    """The variables a backend gives the container of a job whose artifact folder is `artifact_uri`."""
    spec = JobSpec(
        name="someone-lbm-training-test",
        owner="someone",
        queue="fss-ml-p5-48xlarge-us-east-1",
        command=("lbm", "train", "--config-uri", config_uri(artifact_uri)),
        artifact_uri=artifact_uri,
        share_identifier="someone",
    )
    return job_environment(spec, attempt=1, output_dir=OptMl(Path("/opt/ml")).checkpoints)


def start_entrypoint(opt: OptMl, env: Mapping[str, str], **popen) -> subprocess.Popen:
    """The entry point as SageMaker starts the image (`<entry point> train`), on the tree `opt`."""
    command = [str(Path(sys.executable).with_name("lbm")), "sagemaker-entrypoint", "train"]
    return subprocess.Popen(command, env={**env, ROOT_ENV: str(opt.root)}, text=True, **popen)


def run_entrypoint(opt: OptMl, env: Mapping[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    process = start_entrypoint(opt, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def metrics_of(directory: Path) -> dict[int, dict]:
    """metrics.jsonl of a folder by step (failing when a step is logged twice)."""
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in records}
    assert len(by_step) == len(records), "a step logged twice"
    return by_step
