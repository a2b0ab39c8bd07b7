"""`lbm`: dispatch to one subcommand module, imported only when used (keeps fast commands fast)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from lbm.cli.entry import run
from lbm.jobs.registry import REGISTRY

SUBCOMMANDS = {
    "train": ("lbm.cli.train", "train a policy in this process (what every job runs)"),
    "eval": ("lbm.cli.eval", "roll out a checkpoint's policy in its environment: success rates"),
    "data": ("lbm.cli.data", "make or inspect datasets"),
    "launch": ("lbm.cli.launch", "submit a training job to a queue"),
    "sweep": ("lbm.cli.sweep", "run a W&B sweep file's hyperparameter search as jobs"),
    "agent": ("lbm.cli.agent", "the embedded backend's scheduler daemon"),
    "watch": ("lbm.cli.watch", "post a region's job transitions to Slack (any backend)"),
}
# Commands a backend brings (e.g. the entry point its engine starts a job with).
SUBCOMMANDS.update({name: command for info in REGISTRY.values() for name, command in info.commands.items()})


def usage() -> str:
    lines = ["usage: lbm <command> [options]", "", "commands:"]
    width = max(map(len, SUBCOMMANDS))
    lines += [f"  {name:<{width}} {about}" for name, (_, about) in SUBCOMMANDS.items()]
    lines += ["", "Run `lbm <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"lbm: error: unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return run(f"lbm {name}", module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
