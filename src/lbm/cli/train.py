"""`lbm train`: train a policy from a named config plus overrides, or from the resolved config a launcher
stored with the job, in this process (or under torchrun)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lbm.cli.entry import ArgumentParser, at_least, run
from lbm.errors import LbmError
from lbm.jobs.environment import ARTIFACT_URI, OUTPUT_DIR


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="lbm train", description="Train a language-conditioned diffusion policy.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-file", help="config name, e.g. train_diffusion_unet_keypoints_lang_tiny")
    source.add_argument(
        "--config-uri",
        help="a resolved config.yaml (path, file:// or s3://), as `lbm launch` stores it: trained as it is",
    )
    p.add_argument("--config-dir", help="a directory of your own configs, searched after the package's")
    p.add_argument(
        "--output-dir",
        help="where checkpoints, metrics and config.yaml go "
        f"(default: ${OUTPUT_DIR}, else outputs/<date>/<time>-<config>)",
    )
    p.add_argument(
        "--artifact-uri",
        default=os.environ.get(ARTIFACT_URI),
        help="also copy checkpoints, metrics and config.yaml here while training (file:// or s3://)",
    )
    p.add_argument(
        "--nproc-per-node", type=at_least(1), default=1, help="processes (GPUs) on this machine; >1 runs DDP"
    )
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides: a.b=1, +a.c=2, ~a.d, policy.down_dims=[64,128]"
    )
    return p


def default_output_dir(config_name: str) -> Path:
    if os.environ.get(OUTPUT_DIR):
        return Path(os.environ[OUTPUT_DIR])
    return Path("outputs") / time.strftime("%Y-%m-%d") / f"{time.strftime('%H-%M-%S')}-{config_name}"


def torchrun_argv(args, output_dir: Path) -> list[str]:
    """This command again under torchrun, one process per rank (multi-node through PET_* variables)."""
    rendezvous = [] if ("PET_NNODES" in os.environ or "MASTER_ADDR" in os.environ) else ["--standalone"]
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous,
        f"--nproc-per-node={args.nproc_per_node}",
    ]
    source = ["--config-uri", args.config_uri] if args.config_uri else ["--config-file", args.config_file]
    argv += ["-m", "lbm.cli.train", *source, "--output-dir", str(output_dir)]
    if args.config_dir:
        argv += ["--config-dir", args.config_dir]
    if args.artifact_uri:
        argv += ["--artifact-uri", args.artifact_uri]
    return argv + list(args.overrides)


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.config_uri:
        if args.overrides or args.config_dir:
            raise LbmError("--config-uri trains the stored config as it is: drop overrides and --config-dir")
        from lbm.train.compose import load_resolved_config

        cfg = load_resolved_config(args.config_uri)
        name = Path(args.config_uri.rstrip("/")).parent.name or "resolved"
    else:
        from lbm.train.compose import compose_config

        cfg = compose_config(args.config_file, args.overrides, args.config_dir)
        name = args.config_file
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(name)
    if args.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        command = torchrun_argv(args, output_dir)
        os.execv(command[0], command)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    from lbm.train.trainer import Trainer

    return Trainer(cfg, output_dir, args.artifact_uri).run()


if __name__ == "__main__":
    sys.exit(run("lbm train", main))
