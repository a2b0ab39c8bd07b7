"""The engine's run cap and grid under concurrency: several processes asking one study at once (SQLite
and PostgreSQL) get exactly the cap's number of runs, and no grid point twice; bayes asks the GP, then TPE
from the stated study size."""

from __future__ import annotations

import multiprocessing

import numpy as np
import optuna
import pytest

from lbm.sweeps.engine import BAYES_GP_TRIALS, SweepStudy, bayes_sampler, gp_sampler, run_cap, tpe_sampler
from lbm.sweeps.sweep_file import parse_sweep

GRID = {
    "method": "grid",
    "metric": {"name": "loss"},
    "parameters": {"a": {"values": [1, 2, 3, 4]}, "b": {"min": 1, "max": 3}},
}
BAYES = {"method": "bayes", "metric": {"name": "loss"}, "parameters": {"x": {"min": -1.0, "max": 1.0}}}
ASKERS = 4


def ask_until_done(data: dict, url: str, name: str, cap: int | None) -> list[dict]:
    """What one controller process gets: runs until the study says there are no more."""
    sweep = parse_sweep(data, "t")
    study = SweepStudy.open(sweep, url, name, cap, seed=0)
    got = []
    while (run := study.next_run()) is not None:
        got.append(run.parameters)
        value = sum(v for v in run.parameters.values())
        study.finish(run.number, float(value))
    return got


def ask_concurrently(data: dict, url: str, name: str, cap: int | None) -> list[dict]:
    SweepStudy.open(parse_sweep(data, "t"), url, name, cap, seed=0)  # created once, then joined
    with multiprocessing.get_context("spawn").Pool(ASKERS) as pool:
        results = pool.starmap(ask_until_done, [(data, url, name, cap)] * ASKERS)
    return [point for got in results for point in got]


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'study.sqlite'}"


def test_the_cap_is_the_least_of_max_runs_run_cap_and_the_grid():
    sweep = parse_sweep(GRID, "t")
    assert run_cap(sweep, None) == 12
    assert run_cap(sweep, 5) == 5
    assert run_cap(parse_sweep({**GRID, "run_cap": 3}, "t"), 5) == 3
    assert run_cap(parse_sweep(BAYES, "t"), None) is None


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_concurrent_askers_get_the_whole_grid_once(storage, request):
    url = request.getfixturevalue("sqlite_url" if storage == "sqlite" else "postgres_url")
    points = ask_concurrently(GRID, url, f"grid-{storage}", run_cap(parse_sweep(GRID, "t"), 100))
    assert sorted((p["a"], p["b"]) for p in points) == [(a, b) for a in (1, 2, 3, 4) for b in (1, 2, 3)]


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_concurrent_askers_share_the_run_cap(storage, request):
    url = request.getfixturevalue("sqlite_url" if storage == "sqlite" else "postgres_url")
    points = ask_concurrently(BAYES, url, f"bayes-{storage}", 15)
    assert len(points) == 15
    assert len({p["x"] for p in points}) == 15  # each asker's draws differ from the others'
    study = optuna.load_study(study_name=f"bayes-{storage}", storage=url)
    counted = [t for t in study.trials if not t.user_attrs.get("beyond_cap")]
    assert sorted(t.number for t in counted) == list(range(15))


def test_a_run_met_target_ends_the_sweep(sqlite_url):
    data = {**BAYES, "metric": {"name": "loss", "goal": "maximize", "target": -2.0}}
    assert ask_until_done(data, sqlite_url, "t", 10)[1:] == []  # any value of x is above -2


def take_over_at_once(url: str, name: str, number: int, barrier) -> bool:  # noqa: ANN001 - a manager's proxy
    """Whether this process took run `number` over from its dead controller, trying with the others."""
    study = SweepStudy.open(parse_sweep(BAYES, "t"), url, name, 4, seed=0)
    barrier.wait()
    return study.take_over(number, "gone-host:1")


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_of_controllers_taking_over_a_dead_ones_run_at_once_exactly_one_does(storage, request):
    url = request.getfixturevalue("sqlite_url" if storage == "sqlite" else "postgres_url")
    name = f"takeover-{storage}"
    study = SweepStudy.open(parse_sweep(BAYES, "t"), url, name, 4, seed=0)
    run = study.next_run()
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(ASKERS) as pool:
        barrier = manager.Barrier(ASKERS)
        taken = pool.starmap(take_over_at_once, [(url, name, run.number, barrier)] * ASKERS)
    assert sorted(taken) == [False] * (ASKERS - 1) + [True]
    winner = study.trial(run.number).user_attrs["controller"]
    assert winner != "gone-host:1"
    assert study.take_over(run.number, "gone-host:1") is False  # taken over from that one already
    assert study.take_over(run.number, winner) is True  # the winner died in turn: a new one may take it


def proposal_after(history: list, number: int, make_sampler) -> dict:  # noqa: ANN001 - a sampler factory
    """Run `number`'s parameters from a bayes study of `make_sampler` holding the first `number` runs."""
    study = SweepStudy.open(
        parse_sweep(BAYES, "t"), optuna.storages.InMemoryStorage(), "t", None, 3, make_sampler
    )
    study.study.add_trials(history[:number])
    return study.next_run().parameters


def finished_runs(low: float, high: float, best: float) -> list:
    """BAYES_GP_TRIALS + 1 finished runs of x uniform in [low, high], their value (x - best) ** 2."""
    x = optuna.distributions.FloatDistribution(-1.0, 1.0)
    points = np.random.default_rng(0).uniform(low, high, BAYES_GP_TRIALS + 1)
    return [
        optuna.trial.create_trial(params={"x": v}, distributions={"x": x}, value=(v - best) ** 2)
        for v in points
    ]


def test_bayes_asks_the_gp_below_its_switch_and_tpe_from_there():
    history = finished_runs(-1.0, 0.0, 0.5)  # the best lies where no run was: the GP proposes a new point
    for number, chosen, other in [
        (BAYES_GP_TRIALS - 1, gp_sampler, tpe_sampler),
        (BAYES_GP_TRIALS, tpe_sampler, gp_sampler),
    ]:
        bayes = proposal_after(history, number, bayes_sampler)
        assert bayes == proposal_after(history, number, chosen)
        assert bayes != proposal_after(history, number, other)


def test_bayes_asks_tpe_in_place_of_a_point_the_gp_proposes_again():
    history = finished_runs(-1.0, 1.0, 0.0)  # the GP's best expected improvement is at the best run's point
    number = BAYES_GP_TRIALS - 1
    again = proposal_after(history, number, gp_sampler)
    assert again in [t.params for t in history[:number]]
    assert proposal_after(history, number, bayes_sampler) == proposal_after(history, number, tpe_sampler)
