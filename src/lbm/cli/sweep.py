"""`lbm sweep`: run a W&B sweep file's hyperparameter search as jobs on the queues, with no W&B server.

`lbm sweep [launch flags] --sweep-config-file F` creates a sweep and runs its controller;
`validate`, `preview`, `status`, `resume` and `stop` look at or act on one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lbm.cli.entry import ArgumentParser
from lbm.cli.launch import add_launch_arguments, launch_spec_of

if TYPE_CHECKING:
    from lbm.sweeps.record import SweepRecord
    from lbm.sweeps.sweep_file import SweepFile

ACTIONS = ("validate", "preview", "status", "resume", "stop")
DEFAULT_SWEEP_FILE = "example_sweep.yaml"
DRY_RUN_RUNS = 3


def sweep_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="lbm sweep",
        description="Sweep hyperparameters from a W&B sweep file: each run is a job launched with the "
        f"flags below plus its parameters. Also: lbm sweep {{{','.join(ACTIONS)}}} ... (see --help of each).",
    )
    add_launch_arguments(p)
    p.add_argument(
        "--sweep-config-file",
        default=DEFAULT_SWEEP_FILE,
        help=f"W&B sweep file: a path, in ./sweep/, or a shipped example (default {DEFAULT_SWEEP_FILE})",
    )
    p.add_argument("--max-agents", type=int, default=1, help="runs at once (default 1)")
    p.add_argument(
        "--max-runs", type=int, help="runs in all, across agents (default: run_cap, grid size, or no end)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random and bayes draws (default 0)")
    p.add_argument(
        "--name",
        help="the sweep's name (default: <sweep file>-<date-time>); an existing one in --storage is joined",
    )
    p.add_argument(
        "--storage",
        help="SQLAlchemy URL of the study (default: SQLite in the sweep's folder), "
        "e.g. postgresql+psycopg://user@host/db for controllers on several machines",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="run the controller in the background")
    mode.add_argument(
        "--dry-run", action="store_true", help="check everything, print the first runs, launch nothing"
    )
    return p


def action_parser(action: str) -> ArgumentParser:
    p = ArgumentParser(prog=f"lbm sweep {action}")
    if action in ("validate", "preview"):
        p.add_argument("file", help="W&B sweep file (a path, a file in ./sweep/, or a shipped example)")
    else:
        p.add_argument("sweep", help="the sweep's name")
        p.add_argument("--storage", help="SQLAlchemy URL of the study (a sweep created on another machine)")
    if action == "preview":
        p.add_argument("--runs", type=int, default=5, help="how many runs (default 5)")
        p.add_argument("--seed", type=int, default=0, help="the sweep's seed (default 0)")
    if action in ("preview", "status"):
        p.add_argument("--json", action="store_true", help="print JSON")
    if action == "resume":
        p.add_argument("--detach", action="store_true", help="run the controller in the background")
    return p


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv and argv[0] in ACTIONS:
        args = action_parser(argv[0]).parse_args(argv[1:])
        return globals()[f"_{argv[0]}"](args)
    return _create(sweep_parser().parse_args(argv))


def _read(name: str) -> SweepFile:
    from lbm.sweeps.sweep_file import find_sweep_file, read_sweep_file

    return read_sweep_file(find_sweep_file(name))


def _validate(args: argparse.Namespace) -> int:
    from lbm.sweeps.engine import run_cap

    sweep = _read(args.file)
    cap = run_cap(sweep, None)
    size = f", {len(sweep.grid())} grid points" if sweep.method == "grid" else ""
    print(
        f"{args.file}: valid {sweep.method} sweep of {len(sweep.parameters)} parameter(s){size}; "
        f"runs: {cap if cap is not None else 'until stopped'}"
    )
    return 0


def _preview(args: argparse.Namespace) -> int:
    from lbm.errors import LbmError
    from lbm.sweeps.engine import preview

    if args.runs < 1:
        raise LbmError(f"--runs must be 1 or more, got {args.runs}")
    points = preview(_read(args.file), args.runs, args.seed)
    if args.json:
        from lbm.cli.tables import print_json

        print_json(points)
    else:
        for number, point in enumerate(points):
            print(f"run {number}: " + " ".join(f"{k}={v}" for k, v in point.items()))
    return 0


def _settings_of(args: argparse.Namespace) -> dict[str, Any]:
    spec = launch_spec_of(args)
    settings = dataclasses.asdict(spec)
    settings["config_overrides"] = list(spec.config_overrides)
    return settings


def _create(args: argparse.Namespace) -> int:
    from lbm.errors import LbmError
    from lbm.site import load_site
    from lbm.sweeps.conditional import read_conditional_files
    from lbm.sweeps.engine import SweepStudy, preview, run_cap
    from lbm.sweeps.overrides import check_keys
    from lbm.sweeps.record import State, SweepRecord, SweepSettings, check_name, set_state
    from lbm.sweeps.runs import RunPlanner
    from lbm.sweeps.sweep_file import find_sweep_file, read_sweep_file

    if args.profile:
        os.environ["AWS_PROFILE"] = args.profile
    if args.max_runs is not None and args.max_runs < 1:
        raise LbmError(f"--max-runs must be 1 or more, got {args.max_runs}")
    if args.max_agents < 1:
        raise LbmError(f"--max-agents must be 1 or more, got {args.max_agents}")
    path = find_sweep_file(args.sweep_config_file)
    sweep = read_sweep_file(path)
    name = check_name(args.name or f"{path.stem}-{time.strftime('%Y-%m-%d-%H-%M-%S')}")
    settings = _settings_of(args)
    files = read_conditional_files(sweep)
    planner = RunPlanner(name, settings, files, load_site(), sweep.kept.get("project"))
    base = planner.base()
    check_keys(list(sweep.parameters), base.config, base.launch.config_file)
    cap = run_cap(sweep, args.max_runs)
    first = preview(sweep, min(cap or DRY_RUN_RUNS, DRY_RUN_RUNS), args.seed)
    submissions = [planner.submission(point) for point in first]
    if args.max_runs is not None and args.max_runs % args.max_agents:
        print(
            f"warning: --max-runs {args.max_runs} does not divide by --max-agents {args.max_agents}; "
            "the last runs go with fewer agents",
            file=sys.stderr,
        )
    if args.dry_run:
        return _print_dry_run(name, sweep, cap, submissions, first)
    from lbm.launch.submission import check_bucket

    check_bucket(base.region)
    wanted = SweepSettings(sweep.raw, settings, files, args.max_agents, cap, args.seed)
    record = SweepRecord.new(name, args.storage)
    storage = record.storage()
    study = SweepStudy.open(sweep, storage, name, cap, args.seed)
    if "sweep" in study.study.user_attrs:
        if study.study.user_attrs["sweep"] != sweep.raw:
            raise LbmError(f"sweep {name} already exists with another sweep file; pick another --name")
        print(f"joining sweep {name}")
    else:
        for key, value in wanted.to_attrs().items():
            study.study.set_user_attr(key, value)
        set_state(study, State.RUNNING)
    record.save()
    print(
        f"sweep:   {name} ({sweep.method}, run cap {cap if cap is not None else 'none'}, "
        f"{args.max_agents} at once)"
    )
    print(f"status:  lbm sweep status {name}", flush=True)
    if args.detach:
        return _detach(record)
    return _control(record, args.max_agents)


def _print_dry_run(name: str, sweep: SweepFile, cap: int | None, submissions: list, points: list) -> int:
    runs = f"{cap} run(s)" if cap is not None else "runs until it is stopped"
    print(f"# dry run: nothing was launched; sweep {name} ({sweep.method}) would make {runs}")
    for number, (submission, point) in enumerate(zip(submissions, points, strict=True)):
        print(f"run {number}: " + " ".join(f"{k}={v}" for k, v in point.items()))
        print(f"  overrides: {','.join(submission.overrides)}")
    return 0


def _control(record: SweepRecord, max_agents: int | None = None) -> int:
    """Run the sweep's controller here, with `max_agents` runs at once (default: the sweep's)."""
    from lbm.jobs.registry import backend_for
    from lbm.secrets import submitter_secrets
    from lbm.site import load_site
    from lbm.sweeps.controller import Controller
    from lbm.sweeps.runs import RunPlanner

    study, settings = record.study()
    planner = RunPlanner(
        record.name, settings.launch, settings.conditional_files, load_site(), settings.sweep.get("project")
    )
    backend = backend_for(load_site().region(settings.launch.get("region")))
    controller = Controller(study, planner, backend, max_agents or settings.max_agents, submitter_secrets())
    try:
        return controller.run()
    except KeyboardInterrupt:
        print(
            f"\nsweep {record.name} goes on without a controller; pick it up with: "
            f"lbm sweep resume {record.name}",
            file=sys.stderr,
        )
        return 130


def _detach(record: SweepRecord) -> int:
    record.folder.mkdir(parents=True, exist_ok=True)
    with open(record.log, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lbm.cli.main", "sweep", "resume", record.name],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"controller: pid {process.pid}, log {record.log}")
    return 0


def _record(args: argparse.Namespace) -> SweepRecord:
    from lbm.sweeps.record import SweepRecord

    record = SweepRecord.load(args.sweep, args.storage)
    if args.storage:
        record.save()
    return record


def _resume(args: argparse.Namespace) -> int:
    from lbm.sweeps.record import State, set_state, state_of

    record = _record(args)
    study, _ = record.study()
    if state_of(study) == State.STOPPED:
        set_state(study, State.RUNNING)
    print(f"resuming sweep {record.name}", flush=True)
    return _detach(record) if args.detach else _control(record)


def _stop(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    from lbm.errors import LbmError
    from lbm.jobs.registry import backend_for
    from lbm.site import load_site
    from lbm.sweeps.engine import JOB
    from lbm.sweeps.record import State, set_state

    record = _record(args)
    study, settings = record.study()
    set_state(study, State.STOPPED)
    backend = backend_for(load_site().region(settings.launch.get("region")))
    stopped = 0
    for trial in study.trials():
        if trial.state is not TrialState.RUNNING:
            continue
        job = trial.user_attrs.get(JOB)
        if job is not None:
            try:
                backend.stop(job, reason=f"sweep {record.name} stopped")
                stopped += 1
            except LbmError:
                pass  # it ended meanwhile
        study.finish(trial.number, None, reason="the sweep was stopped")
    print(
        f"sweep {record.name} stopped ({stopped} running job(s) stopped); lbm sweep resume {record.name} "
        "goes on with the runs left"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from lbm.sweeps.status import sweep_status

    record = _record(args)
    study, settings = record.study()
    status = sweep_status(record, study, settings)
    if args.json:
        from lbm.cli.tables import print_json

        print_json(status)
        return 0
    _print_status(status)
    return 0


def _print_status(status: dict[str, Any]) -> None:
    from lbm.cli.tables import print_table

    metric = status["metric"]
    print(
        f"sweep {status['name']}: {status['state']}, {status['method']}, "
        f"{status['runs_made']} of {status['run_cap'] if status['run_cap'] is not None else 'unlimited'} runs"
        + (f", metric {metric['name']} ({metric['goal']})" if metric else "")
    )
    rows = [
        (
            r["number"],
            r["job"],
            r["state"],
            r["value"],
            " ".join(f"{k}={v}" for k, v in r["parameters"].items()),
            r["reason"],
        )
        for r in status["runs"]
    ]
    print_table(["RUN", "JOB", "STATE", "METRIC", "PARAMETERS", "REASON"], rows)
    best = status["best"]
    if best:
        print(f"best: run {best['number']} {metric['name']}={best['value']} job {best['job']}")
        print(f"      artifacts {best['artifact_uri']}")
