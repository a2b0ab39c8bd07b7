"""`lbm sagemaker-entrypoint`: what a SageMaker training container runs (SageMaker adds the argument `train`).

It reads the job's hyperparameters and hosts from `/opt/ml/input/config/`, fetches the job's resolved
config (the `config-uri` hyperparameter, else $LBM_CONFIG_URI) and runs `lbm train --config-uri` under
torchrun on every host: one process per GPU, all meeting on the first host of `resourceconfig.json`. The
W&B key comes from the Secrets Manager secret a hyperparameter names, when one does. Checkpoints,
`config.yaml` and `metrics.jsonl` go to `/opt/ml/checkpoints`, which SageMaker syncs with the job's S3
folder and restores on a retry, so a retried job resumes there. The host's log (secrets redacted),
`metrics.jsonl` and the W&B files are copied to `/opt/ml/output/data` for `output.tar.gz`, and the final
checkpoint with its config to `/opt/ml/model`. SIGTERM (SageMaker's stop, 120 s before SIGKILL) goes to
the training processes, which checkpoint and exit. When the job fails or is stopped,
`/opt/ml/output/failure` says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lbm.errors import LbmError
from lbm.jobs import environment
from lbm.jobs.sagemaker import hyperparameters as hp
from lbm.jobs.sagemaker.opt_ml import Hosts, OptMl
from lbm.secrets import redact, secret_env_names

DEFAULT_RENDEZVOUS_PORT = 29500
EXIT_STOPPED = 143
# SageMaker keeps the first 1024 characters of the failure file as the job's FailureReason.
FAILURE_REASON_LIMIT = 1024
_ERROR_LINE = re.compile(r"^(lbm train: error: .*|(\w+\.)*\w*(Error|Exception)(: .*)?)$")
_TORCHRUN_ERROR = "ChildFailedError"


@dataclass(frozen=True)
class JobInputs:
    """What the job's hyperparameters ask for, checked."""

    config_uri: str
    nproc_per_node: int | None
    wandb_secret_id: str | None
    rendezvous_port: int
    ignored: tuple[str, ...] = ()


def read_inputs(hyperparameters: Mapping[str, str], environ: Mapping[str, str]) -> JobInputs:
    """The job's inputs from its (restored) hyperparameters, the config's URI else from the job's
    environment; LbmError for a missing or meaningless one."""
    config_uri = hyperparameters.get(hp.CONFIG_URI, "").strip() or environ.get(environment.CONFIG_URI, "")
    if not config_uri:
        raise LbmError(
            f"the job has no config: neither hyperparameter {hp.CONFIG_URI!r} nor ${environment.CONFIG_URI} "
            "is set (the launcher sets them to its config.yaml)"
        )
    nproc = hyperparameters.get(hp.NPROC_PER_NODE)
    port = hyperparameters.get(hp.RENDEZVOUS_PORT)
    known = {hp.CONFIG_URI, hp.NPROC_PER_NODE, hp.WANDB_SECRET_ID, hp.RENDEZVOUS_PORT}
    return JobInputs(
        config_uri=config_uri,
        nproc_per_node=None if nproc is None else _whole_number(hp.NPROC_PER_NODE, nproc, 1, 1024),
        wandb_secret_id=hyperparameters.get(hp.WANDB_SECRET_ID, "").strip() or None,
        rendezvous_port=DEFAULT_RENDEZVOUS_PORT
        if port is None
        else _whole_number(hp.RENDEZVOUS_PORT, port, 1, 65535),
        ignored=tuple(sorted(set(hyperparameters) - known)),
    )


def _whole_number(name: str, text: str, least: int, most: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise LbmError(f"hyperparameter {name}={text!r} is not valid: must be a whole number") from None
    if not least <= value <= most:
        raise LbmError(f"hyperparameter {name}={value} is not valid: must be {least} to {most}")
    return value


def wandb_key_from_secret(secret_id: str) -> str:
    """The W&B API key held by a Secrets Manager secret: its text, or its `WANDB_API_KEY` field."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    # The region: the secret ARN's, else the environment's (SageMaker sets AWS_REGION, boto3 reads only
    # AWS_DEFAULT_REGION).
    arn_parts = secret_id.split(":")
    region = arn_parts[3] if secret_id.startswith("arn:") and len(arn_parts) > 3 else None
    region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    where = f"the W&B key from Secrets Manager secret {secret_id!r}"
    try:
        client = boto3.client("secretsmanager", region_name=region)
        text = client.get_secret_value(SecretId=secret_id).get("SecretString") or ""
    except ClientError as error:
        problem = error.response.get("Error", {})
        raise LbmError(f"cannot read {where}: {problem.get('Code')}: {problem.get('Message')}") from None
    except BotoCoreError as error:
        raise LbmError(f"cannot read {where}: {error}") from None
    try:
        fields = json.loads(text)
    except ValueError:
        fields = None
    if isinstance(fields, dict):
        if not isinstance(fields.get("WANDB_API_KEY"), str):
            raise LbmError(f"{where}: the secret is a JSON object without a WANDB_API_KEY string")
        text = fields["WANDB_API_KEY"]
    if not text.strip():
        raise LbmError(f"{where}: the secret is empty")
    return text.strip()


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def fetch_config(uri: str, opt: OptMl) -> Path:
    """The job's resolved config, copied from its URI to a local file."""
    from lbm.storage import transfer
    from lbm.storage.layout import CONFIG_FILE

    local = opt.root / "input" / "lbm" / CONFIG_FILE
    try:
        return transfer.download(uri, local)
    except (OSError, ValueError) as error:
        raise LbmError(f"cannot fetch the job's config {uri}: {error}") from None


def torchrun_command(config: Path, hosts: Hosts, nproc: int, port: int, output_dir: Path) -> list[str]:
    """`lbm train` under torchrun: one process per GPU on each host, meeting on the first host."""
    if len(hosts.hosts) == 1:
        rendezvous = ["--standalone"]
    else:
        rendezvous = [
            f"--nnodes={len(hosts.hosts)}",
            f"--node-rank={hosts.rank}",
            f"--master-addr={hosts.first}",
            f"--master-port={port}",
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous,
        f"--nproc-per-node={nproc}",
        "-m",
        "lbm.cli.train",
        "--config-uri",
        str(config),
        "--output-dir",
        str(output_dir),
    ]


def start_attempt(opt: OptMl, hosts: Hosts) -> int:
    """This attempt's number, from 0: the attempts started before it, counted in the checkpoint folder that
    SageMaker restores on a retry (the first host counts this one in)."""
    try:
        started = int(opt.attempts_file.read_text())
    except FileNotFoundError:
        started = 0
    except ValueError:
        raise LbmError(f"{opt.attempts_file} does not hold a number of attempts") from None
    if hosts.rank == 0:
        opt.attempts_file.write_text(f"{started + 1}\n")
    return started


def training_environment(
    environ: Mapping[str, str], opt: OptMl, hosts: Hosts, wandb_key: str | None, attempt: int
) -> dict[str, str]:
    """The training processes' environment: the container's, with the attempt's number, the W&B key from
    its secret when there is one, and without LBM_ARTIFACT_URI (SageMaker syncs the checkpoint folder to
    the job's folder)."""
    env = dict(environ)
    env.pop(environment.ARTIFACT_URI, None)
    env[environment.OUTPUT_DIR] = str(opt.checkpoints)
    env[environment.ATTEMPT] = str(attempt)
    env["PYTHONUNBUFFERED"] = "1"
    if wandb_key is not None:
        env["WANDB_API_KEY"] = wandb_key
    if hosts.network_interface:
        env.setdefault("NCCL_SOCKET_IFNAME", hosts.network_interface)
        env.setdefault("GLOO_SOCKET_IFNAME", hosts.network_interface)
    return env


class Stop:
    """On SIGTERM or SIGINT, pass SIGTERM to the training processes (torchrun's children), which checkpoint
    and exit; torchrun itself would kill them 30 s after passing it on."""

    def __init__(self):
        self.signal: int | None = None
        self.process: subprocess.Popen | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        # Straight to the file descriptor: the handler may interrupt a write to sys.stdout's buffer.
        os.write(1, f"lbm sagemaker-entrypoint: {signal.Signals(signum).name}: stopping training\n".encode())
        if self.process is None or self.process.poll() is not None:
            return
        import psutil

        try:
            workers = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return
        for target in workers or [psutil.Process(self.process.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                target.send_signal(signal.SIGTERM)


def run_teed(
    command: Sequence[str], env: Mapping[str, str], log_path: Path, secrets: Sequence[str], stop: Stop
) -> tuple[int, list[str]]:
    """Run `command`, copying its output to stdout and `log_path`, secrets redacted, line by line; its exit
    status and its last lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    secret_bytes = [s.encode() for s in secrets if s]
    tail: deque[str] = deque(maxlen=200)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        stop.process = process
        if stop.signal is not None:  # the signal came before the process was there to receive it
            process.terminate()
        for line in iter(process.stdout.readline, b""):
            line = redact(line, secret_bytes)
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
            tail.append(line.decode(errors="replace").rstrip())
        code = process.wait()
    return (128 - code if code < 0 else code), list(tail)


def failure_reason(code: int, tail: Sequence[str], host: str) -> str:
    """Why training failed, in one line: the trainer's last error line when it printed one."""
    errors = [line.strip() for line in tail if _ERROR_LINE.match(line.strip())]
    errors = [line for line in errors if _TORCHRUN_ERROR not in line]
    detail = f": {errors[-1]}" if errors else ""
    return f"lbm train failed on {host} with exit status {code}{detail}"


def stopped_reason(signum: int, opt: OptMl) -> str:
    from lbm.train import checkpoint as ckpt

    newest = ckpt.latest_complete(opt.checkpoints)
    saved = f"; newest checkpoint: {newest.path.name} (step {newest.step})" if newest else ""
    return f"stopped by {signal.Signals(signum).name}{saved}"


def write_failure(opt: OptMl, reason: str) -> None:
    opt.failure_file.parent.mkdir(parents=True, exist_ok=True)
    opt.failure_file.write_text(reason[:FAILURE_REASON_LIMIT] + "\n")


def collect_outputs(opt: OptMl) -> None:
    """Copy `metrics.jsonl` and the W&B folder from the checkpoint folder to the output data folder."""
    from lbm.storage.layout import METRICS_FILE

    opt.output_data.mkdir(parents=True, exist_ok=True)
    metrics = opt.checkpoints / METRICS_FILE
    if metrics.is_file():
        shutil.copy2(metrics, opt.output_data / METRICS_FILE)
    wandb_dir = opt.checkpoints / "wandb"
    if wandb_dir.is_dir():
        shutil.copytree(wandb_dir, opt.output_data / "wandb", symlinks=True, dirs_exist_ok=True)


def publish_model(opt: OptMl) -> Path | None:
    """The newest complete checkpoint, its sidecar and `config.yaml` copied to the model folder."""
    from lbm.storage.layout import CONFIG_FILE
    from lbm.train import checkpoint as ckpt

    newest = ckpt.latest_complete(opt.checkpoints)
    if newest is None:
        return None
    opt.model.mkdir(parents=True, exist_ok=True)
    for path in (newest.path, newest.sidecar, opt.checkpoints / CONFIG_FILE):
        if path.is_file():
            shutil.copy2(path, opt.model / path.name)
    return opt.model / newest.path.name


USAGE = """usage: lbm sagemaker-entrypoint [train]

Run a SageMaker training job's `lbm train` on this host, with the job's other hosts: what the training
image runs (SageMaker starts it with the argument `train`). $LBM_SAGEMAKER_ROOT replaces /opt/ml."""


def main(argv: Sequence[str]) -> int:
    if list(argv) in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if list(argv) not in ([], ["train"]):
        raise LbmError(
            f"unexpected arguments {' '.join(argv)!r}: SageMaker starts the image with `train` only"
        )
    opt = OptMl.from_env()
    stop = Stop()
    stop.install()
    try:
        return train(opt, stop)
    except LbmError as error:
        write_failure(opt, str(error))
        raise


def train(opt: OptMl, stop: Stop) -> int:
    hosts = opt.hosts()
    inputs = read_inputs(hp.restore_all(opt.hyperparameters()), os.environ)
    if inputs.ignored:
        print(
            f"lbm sagemaker-entrypoint: ignoring unknown hyperparameters: {', '.join(inputs.ignored)}",
            flush=True,
        )
    wandb_key = None
    if inputs.wandb_secret_id:
        wandb_key = wandb_key_from_secret(inputs.wandb_secret_id)
        print(f"W&B key: from Secrets Manager secret {inputs.wandb_secret_id}", flush=True)
    config = fetch_config(inputs.config_uri, opt)
    nproc = inputs.nproc_per_node or max(gpu_count(), 1)
    opt.checkpoints.mkdir(parents=True, exist_ok=True)
    attempt = start_attempt(opt, hosts)
    env = training_environment(os.environ, opt, hosts, wandb_key, attempt)
    command = torchrun_command(config, hosts, nproc, inputs.rendezvous_port, opt.checkpoints)
    print(
        f"host {hosts.current} ({hosts.rank + 1} of {len(hosts.hosts)}), attempt {attempt}: "
        f"nproc-per-node {nproc}, rendezvous on {hosts.first}",
        flush=True,
    )
    secrets = [env[name] for name in secret_env_names(env)]
    if stop.signal is not None:
        write_failure(opt, stopped_reason(stop.signal, opt))
        return EXIT_STOPPED
    code, tail = run_teed(command, env, opt.output_data / "logs" / f"{hosts.current}.log", secrets, stop)
    collect_outputs(opt)
    if stop.signal is not None:
        write_failure(opt, stopped_reason(stop.signal, opt))
        return EXIT_STOPPED
    if code != 0:
        write_failure(opt, failure_reason(code, tail, hosts.current))
        return code
    model = publish_model(opt) if hosts.rank == 0 else None
    if model is not None:
        print(f"model: {model}", flush=True)
    return 0
