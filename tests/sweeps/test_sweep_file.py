"""Sweep files by W&B's rules: what is accepted, what is rejected (one line naming the key), and the
parameters flattened to dotted Hydra keys."""

from __future__ import annotations

import pytest

from lbm.errors import LbmError
from lbm.sweeps.sweep_file import find_sweep_file, parse_sweep, read_sweep_file


def sweep(parameters: dict, method: str = "random", **more) -> dict:
    return {"method": method, "parameters": parameters, **more}


def test_nested_parameters_become_dotted_hydra_keys():
    parsed = parse_sweep(
        sweep(
            {
                "optimizer": {"parameters": {"lr": {"min": 1e-5, "max": 1e-3}}},
                "training": {
                    "parameters": {
                        "lr_scale_for_grouped_params": {"parameters": {"obs_encoder": {"value": 0.1}}}
                    }
                },
            }
        ),
        "t",
    )
    assert list(parsed.parameters) == ["optimizer.lr", "training.lr_scale_for_grouped_params.obs_encoder"]


@pytest.mark.parametrize(
    ("spec", "distribution"),
    [
        ({"value": 3}, "constant"),
        ({"values": [1, 2]}, "categorical"),
        ({"values": [1, 2], "probabilities": [0.3, 0.7]}, "categorical_w_probabilities"),
        ({"min": 1, "max": 4}, "int_uniform"),
        ({"min": 1, "max": 4.0}, "uniform"),
        ({"min": 0.1, "max": 4}, "uniform"),
        ({"distribution": "normal"}, "normal"),
        ({"distribution": "q_beta", "a": 2, "b": 3, "q": 0.1}, "q_beta"),
    ],
)
def test_the_distribution_is_inferred_from_the_keys_as_wandb_does(spec, distribution):
    assert parse_sweep(sweep({"x": spec}), "t").parameters["x"].distribution == distribution


def test_defaults_are_filled_in_as_wandb_does():
    parameters = parse_sweep(
        sweep({"n": {"distribution": "q_normal"}, "b": {"distribution": "beta"}}), "t"
    ).parameters
    assert parameters["n"].settings == {"mu": 0.0, "sigma": 1.0, "q": 1.0}
    assert parameters["b"].settings == {"a": 1.0, "b": 1.0}


def test_every_wandb_distribution_is_accepted():
    specs = {
        "constant": {"value": 1},
        "categorical": {"values": ["a", "b"]},
        "categorical_w_probabilities": {"values": [1, 2], "probabilities": [0.5, 0.5]},
        "int_uniform": {"min": 1, "max": 3},
        "uniform": {"min": 0.0, "max": 1.0},
        "q_uniform": {"min": 0, "max": 10, "q": 2},
        "log_uniform_values": {"min": 1e-5, "max": 1e-2},
        "q_log_uniform_values": {"min": 1, "max": 100, "q": 5},
        "inv_log_uniform_values": {"min": 1e-3, "max": 1.0},
        "normal": {"mu": 1, "sigma": 2},
        "q_normal": {"mu": 1, "sigma": 2, "q": 0.5},
        "log_normal": {"mu": 0, "sigma": 1},
        "q_log_normal": {"mu": 0, "sigma": 1, "q": 1},
        "beta": {"a": 2, "b": 5},
        "q_beta": {"a": 2, "b": 5, "q": 0.1},
    }
    parameters = {name: {"distribution": name, **spec} for name, spec in specs.items()}
    parsed = parse_sweep(sweep(parameters), "t").parameters
    assert {key: p.distribution for key, p in parsed.items()} == {name: name for name in specs}


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (sweep({"lr": {"distribution": "log_uniform", "min": -5, "max": -2}}), "log_uniform_values"),
        (sweep({"lr": {"distribution": "q_log_uniform", "min": 0, "max": 2}}), "q_log_uniform_values"),
        (sweep({"lr": {"distribution": "inv_log_uniform", "min": 0, "max": 2}}), "inv_log_uniform_values"),
        (sweep({"lr": {"min": 0.1, "max": 0.5}}, method="grid"), "parameters.lr"),
        (sweep({"lr": {"values": [1, 2], "probabilities": [0.5, 0.5]}}, method="grid"), "parameters.lr"),
        (sweep({"lr": {"min": 0.1, "max": 0.5}}, method="bayes"), "metric"),
        (sweep({"a": {"values": [1]}}, early_terminate={"type": "hyperband", "min_iter": 2}), "metric"),
        (sweep({"a": {"values": [1]}}, method="hyperopt"), "method"),
        ({"parameters": {"a": {"values": [1]}}}, "method"),
        (sweep({"a": {"values": [1]}}, paramters={}), "did you mean parameters"),
        (sweep({"a": {"values": [1]}}, run_cap=0), "run_cap"),
        (sweep({"a": {"values": [1]}}, metric={"goal": "minimize"}), "metric.name"),
        (sweep({"a": {"values": [1]}}, metric={"name": "x", "goal": "lower"}), "metric.goal"),
        (sweep({"a": {"mu": 0, "sigma": 1}}), "need `distribution`"),
        (sweep({"a": {"distribution": "normal", "min": 0}}), "do not belong to distribution normal"),
        (sweep({"a": {"distribution": "gamma"}}), "unknown distribution"),
        (sweep({"a": {"distribution": "log_uniform_values", "min": 0, "max": 1}}), "min above 0"),
        (sweep({"a": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}}), "q must be"),
        (sweep({"a": {"distribution": "normal", "sigma": -1}}), "sigma"),
        (sweep({"a": {"values": []}}), "non-empty"),
        (sweep({"a": {"parameters": {"b": {"values": [1]}}, "values": [2]}}), "only `parameters`"),
        (
            sweep({"a": {"values": [1]}}, early_terminate={"type": "hyperband"}, metric={"name": "x"}),
            "min_iter",
        ),
        (
            sweep({"a": {"values": [1]}}, early_terminate={"type": "x", "min_iter": 1}, metric={"name": "x"}),
            "type",
        ),
        (
            sweep(
                {"a": {"values": [1]}},
                early_terminate={"type": "hyperband", "min_iter": 1, "eta": 1},
                metric={"name": "x"},
            ),
            "eta",
        ),
        (sweep({"conditional": {"min": 0, "max": 1}}), "conditional"),
    ],
)
def test_what_wandb_rejects_is_rejected_with_the_key_named(data, named):
    with pytest.raises(LbmError) as error:
        parse_sweep(data, "bad.yaml")
    assert "\n" not in str(error.value)
    assert named in str(error.value)
    assert str(error.value).startswith("sweep file bad.yaml: ")


@pytest.mark.parametrize(
    "spec",
    [
        {"min": 3, "max": 3},
        {"min": 5.0, "max": 1.0},
        {"values": [1, 2], "probabilities": [0.5, 0.6]},
        {"values": [1, 2], "probabilities": [1.0]},
        {"distribution": "int_uniform", "min": 1.5, "max": 3},
    ],
)
def test_value_checks_apply_at_every_nesting_level(spec):
    for parameters in ({"x": spec}, {"a": {"parameters": {"b": {"parameters": {"x": spec}}}}}):
        with pytest.raises(LbmError, match=r"x: "):
            parse_sweep(sweep(parameters), "t")


def test_kept_keys_are_kept():
    data = sweep(
        {"a": {"values": [1]}},
        project="p",
        entity="e",
        name="n",
        description="d",
        command=["${program}"],
        program="train.py",
    )
    assert parse_sweep(data, "t").kept == {
        "project": "p",
        "entity": "e",
        "name": "n",
        "description": "d",
        "command": ["${program}"],
        "program": "train.py",
    }


def hyperband(**early_terminate):
    data = sweep({"a": {"values": [1]}}, metric={"name": "val_loss"}, early_terminate=early_terminate)
    return parse_sweep(data, "t").early_terminate


def test_the_hyperband_milestones_follow_wandb():
    assert hyperband(type="hyperband", min_iter=3, eta=2).bands[:4] == (3, 6, 12, 24)
    by_max = hyperband(type="hyperband", max_iter=27, s=2)
    assert by_max.bands == (3, 9)
    assert by_max.strict is True


def test_the_grid_follows_wandb():
    parsed = parse_sweep(
        sweep(
            {
                "n": {"min": 1, "max": 3},
                "q": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
                "c": {"values": [1, 1.0, "a", "a"]},
            },
            method="grid",
        ),
        "t",
    )
    assert parsed.parameters["n"].grid_values() == [1, 2, 3]  # int_uniform includes max
    assert parsed.parameters["q"].grid_values() == [0.0, 0.25, 0.5, 0.75]  # from min, below max
    assert parsed.parameters["c"].grid_values() == [1, "a"]  # a value given twice runs once
    assert len(parsed.grid()) == 3 * 4 * 2


def test_the_shipped_examples_are_found_and_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("example_sweep.yaml", "example_sweep_conditional.yaml", "example_sweep_combined.yaml"):
        assert read_sweep_file(find_sweep_file(name)).parameters
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "example_sweep.yaml").write_text(
        "method: grid\nparameters: {a: {values: [1, 2]}}\n"
    )
    assert read_sweep_file(find_sweep_file("example_sweep.yaml")).method == "grid"  # ./sweep/ first
    with pytest.raises(LbmError, match="neither a file"):
        find_sweep_file("nope.yaml")
