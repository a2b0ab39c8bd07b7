"""Controller time per suggestion of a bayes sweep whose study already holds 1,000 finished runs.

The study lives where `lbm sweep` keeps it by default (SQLite in the sweep's folder) and the sweep is the
shipped `example_sweep_combined.yaml` (five parameters, a conditional among them). The finished runs are
written straight into the study; then each timed suggestion is what the controller does for a new run:
ask the engine for the next run's parameters (the run cap and target checked, the trial recorded) and
report its metric. Reported: median and 90th percentile over `--suggestions`.

    python benchmarks/sweep_controller_time.py                  # 1,000 finished runs, 30 suggestions
    python benchmarks/sweep_controller_time.py --finished 200 --suggestions 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from lbm.sweeps.engine import PARAMETERS, SweepStudy
from lbm.sweeps.sweep_file import find_sweep_file, read_sweep_file


def finished_trials(sweep, count: int) -> list[optuna.trial.FrozenTrial]:
    """`count` finished runs with random parameters, as the engine records them."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    trials = []
    for number in range(count):
        trial = study.ask()
        parameters = {key: p.suggest(trial) for key, p in sweep.parameters.items()}
        study.tell(trial, float(number % 97) / 97)
        frozen = study.trials[-1]
        trials.append(
            optuna.trial.create_trial(
                params=frozen.params,
                distributions=frozen.distributions,
                value=frozen.value,
                user_attrs={PARAMETERS: parameters, "job": f"job-{number}"},
            )
        )
    return trials


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--finished", type=int, default=1000, help="finished runs in the study (default 1000)"
    )
    parser.add_argument("--suggestions", type=int, default=30, help="timed suggestions (default 30)")
    args = parser.parse_args()
    sweep = read_sweep_file(find_sweep_file("example_sweep_combined.yaml"))
    with tempfile.TemporaryDirectory(prefix="lbm-sweep-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'study.sqlite'}"
        study = SweepStudy.open(sweep, url, "bench", None, seed=0)
        study.study.add_trials(finished_trials(sweep, args.finished))
        times = []
        for _ in range(args.suggestions):
            started = time.perf_counter()
            run = study.next_run()
            study.finish(run.number, 0.5)
            times.append(time.perf_counter() - started)
    times.sort()
    result = {
        "finished_runs": args.finished,
        "median_ms": round(1000 * statistics.median(times), 1),
        "p90_ms": round(1000 * times[int(0.9 * (len(times) - 1))], 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
