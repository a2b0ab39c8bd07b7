"""Random draws follow W&B's distributions with W&B's parameterisation, checked against each distribution's
known moments over many draws; bayes suggestions stay inside the distribution's support."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from lbm.sweeps.engine import draw_point, preview
from lbm.sweeps.sweep_file import parse_sweep

N = 20_000


def draws(spec: dict) -> np.ndarray:
    parameter = parse_sweep({"method": "random", "parameters": {"x": spec}}, "t").parameters["x"]
    rng = np.random.default_rng(7)
    return np.array([parameter.draw(rng) for _ in range(N)], dtype=object)


def close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance


def test_uniform_int_uniform_and_q_uniform():
    values = draws({"min": 2.0, "max": 6.0}).astype(float)
    assert values.min() >= 2 and values.max() <= 6 and close(values.mean(), 4.0, 0.05)
    ints = draws({"min": 1, "max": 3})
    assert set(ints) == {1, 2, 3}  # max included
    q = draws({"distribution": "q_uniform", "min": 0, "max": 10, "q": 5})
    assert set(q) == {0, 5, 10} and all(isinstance(v, int) for v in q)


def test_log_uniform_values_takes_the_values():
    values = draws({"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}).astype(float)
    logs = np.log10(values)
    assert logs.min() >= -5 and logs.max() <= -1
    assert close(logs.mean(), -3.0, 0.05)  # uniform in log space
    inverse = draws({"distribution": "inv_log_uniform_values", "min": 1e-5, "max": 1e-1}).astype(float)
    assert close(np.log10(inverse).mean(), -3.0, 0.05)


def test_normal_and_log_normal_take_mu_and_sigma():
    values = draws({"distribution": "normal", "mu": 3.0, "sigma": 2.0}).astype(float)
    assert close(values.mean(), 3.0, 0.06) and close(values.std(), 2.0, 0.06)
    logs = np.log(draws({"distribution": "log_normal", "mu": -1.0, "sigma": 0.5}).astype(float))
    assert close(logs.mean(), -1.0, 0.02) and close(logs.std(), 0.5, 0.02)
    q = draws({"distribution": "q_normal", "mu": 0.0, "sigma": 3.0, "q": 0.5}).astype(float)
    assert np.allclose(q / 0.5, np.round(q / 0.5))


def test_beta_and_categorical_with_probabilities():
    values = draws({"distribution": "beta", "a": 2.0, "b": 6.0}).astype(float)
    assert close(values.mean(), 2 / 8, 0.01)
    picks = draws({"values": ["a", "b", "c"], "probabilities": [0.2, 0.3, 0.5]})
    assert close(float(np.mean(picks == "c")), 0.5, 0.02) and close(float(np.mean(picks == "a")), 0.2, 0.02)


def test_a_random_run_draws_the_same_on_any_machine_and_runs_differ():
    sweep = parse_sweep({"method": "random", "parameters": {"a": {"min": 0.0, "max": 1.0}}}, "t")
    assert draw_point(sweep, 0, 4) == draw_point(sweep, 0, 4)
    assert draw_point(sweep, 0, 4) != draw_point(sweep, 0, 5)
    assert draw_point(sweep, 0, 4) != draw_point(sweep, 1, 4)
    assert preview(sweep, 3, 0) == [draw_point(sweep, 0, n) for n in range(3)]


@pytest.mark.parametrize(
    "spec",
    [
        {"distribution": "normal", "mu": 5, "sigma": 0.1},
        {"distribution": "q_log_normal", "mu": 1, "sigma": 1, "q": 1},
        {"distribution": "beta", "a": 2, "b": 2},
        {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        {"values": [8, 2, 4, 16]},
        {"values": [[64, 128], [32]]},
    ],
)
def test_bayes_suggestions_lie_in_the_support(spec):
    parameter = parse_sweep({"method": "random", "parameters": {"x": spec}}, "t").parameters["x"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    values = [parameter.suggest(study.ask()) for _ in range(200)]
    if "values" in spec:
        assert all(v in spec["values"] for v in values)
    elif spec["distribution"] == "normal":
        assert close(float(np.mean(values)), 5.0, 0.05)
    elif spec["distribution"] == "beta":
        assert all(0 <= v <= 1 for v in values)
    elif spec["distribution"] == "log_uniform_values":
        assert all(1e-4 <= v <= 1e-2 for v in values)
    else:
        assert all(v >= 0 and float(v).is_integer() and math.isfinite(v) for v in values)
