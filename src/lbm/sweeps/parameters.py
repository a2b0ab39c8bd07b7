"""One swept parameter as W&B defines it: its distribution (inferred from its keys as W&B does), its checks,
its grid values, its random draws and its suggestion by a model-based sampler."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from lbm.errors import LbmError

if TYPE_CHECKING:
    import numpy as np
    import optuna

# Allowed keys of each distribution besides `distribution`, and their defaults (W&B's schema).
_MU_SIGMA = {"mu": 0.0, "sigma": 1.0}
_A_B = {"a": 1.0, "b": 1.0}
_RANGE = {"min": None, "max": None}
DISTRIBUTIONS: dict[str, dict[str, Any]] = {
    "constant": {"value": None},
    "categorical": {"values": None},
    "categorical_w_probabilities": {"values": None, "probabilities": None},
    "int_uniform": _RANGE,
    "uniform": _RANGE,
    "q_uniform": {**_RANGE, "q": 1.0},
    "log_uniform_values": _RANGE,
    "q_log_uniform_values": {**_RANGE, "q": 1.0},
    "inv_log_uniform_values": _RANGE,
    "normal": _MU_SIGMA,
    "q_normal": {**_MU_SIGMA, "q": 1.0},
    "log_normal": _MU_SIGMA,
    "q_log_normal": {**_MU_SIGMA, "q": 1.0},
    "beta": _A_B,
    "q_beta": {**_A_B, "q": 1.0},
}
REQUIRED = {"constant": ("value",), "categorical": ("values",), "categorical_w_probabilities": ("values",)}
DEPRECATED = {
    "log_uniform": "log_uniform_values",
    "q_log_uniform": "q_log_uniform_values",
    "inv_log_uniform": "inv_log_uniform_values",
}
# Distributions a grid can enumerate (W&B: categorical, constant, int_uniform, q_uniform).
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")
# Quantiles a bayes sampler proposes for unbounded distributions stay this far inside (0, 1).
_QUANTILE_MARGIN = 1e-6


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Parameter:
    """A swept parameter: a dotted Hydra key, a W&B distribution and its settings (defaults filled in)."""

    key: str
    distribution: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.settings[name]

    @property
    def is_discrete(self) -> bool:
        return self.distribution in GRID_DISTRIBUTIONS

    def grid_values(self) -> list[Any]:
        """The values a grid sweep runs, as W&B enumerates them: int_uniform up to and including max,
        q_uniform from min in steps of q below max; a value given twice runs once."""
        if self.distribution == "constant":
            values = [self["value"]]
        elif self.distribution == "categorical":
            values = list(self["values"])
        elif self.distribution == "int_uniform":
            values = list(range(self["min"], self["max"] + 1))
        elif self.distribution == "q_uniform":
            lo, q = self["min"], self["q"]
            count = math.ceil((self["max"] - lo) / q - 1e-9)
            values = [_quantized(lo + i * q, q) for i in range(count)]
        else:
            raise LbmError(
                f"parameter {self.key}: a grid sweep cannot enumerate distribution {self.distribution} "
                f"(use one of {', '.join(GRID_DISTRIBUTIONS)}, or method random or bayes)"
            )
        unique: dict[str, Any] = {}
        for value in values:
            unique.setdefault(value_key(value), value)
        return list(unique.values())

    def draw(self, rng: np.random.Generator) -> Any:
        """A random value from W&B's distribution with W&B's parameterisation (e.g. log_uniform_values takes
        the values, normal takes mu and sigma)."""
        d, s = self.distribution, self.settings
        if d == "constant":
            return s["value"]
        if d == "categorical":
            return s["values"][int(rng.integers(len(s["values"])))]
        if d == "categorical_w_probabilities":
            return s["values"][int(rng.choice(len(s["values"]), p=s["probabilities"]))]
        if d == "int_uniform":
            return int(rng.integers(s["min"], s["max"] + 1))
        if d in ("uniform", "q_uniform"):
            raw = float(rng.uniform(s["min"], s["max"]))
        elif d in ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"):
            raw = math.exp(float(rng.uniform(math.log(s["min"]), math.log(s["max"]))))
        elif d in ("normal", "q_normal"):
            raw = float(rng.normal(s["mu"], s["sigma"]))
        elif d in ("log_normal", "q_log_normal"):
            raw = float(rng.lognormal(s["mu"], s["sigma"]))
        else:
            raw = float(rng.beta(s["a"], s["b"]))
        return _quantized(raw, s["q"]) if d.startswith("q_") else raw

    def suggest(self, trial: optuna.Trial) -> Any:
        """The value a model-based sampler proposes through `trial`: bounded distributions in their own
        space (log scale for the log ones, ordered index for numeric values), unbounded ones as a quantile."""
        d, s, key = self.distribution, self.settings, self.key
        if d == "constant":
            return s["value"]
        if d in ("categorical", "categorical_w_probabilities"):
            values = s["values"]
            if len(values) > 2 and all(_is_number(v) for v in values):
                ordered = sorted(range(len(values)), key=lambda i: values[i])
                return values[ordered[trial.suggest_int(key, 0, len(values) - 1)]]
            return values[trial.suggest_categorical(key, list(range(len(values))))]
        if d == "int_uniform":
            return trial.suggest_int(key, s["min"], s["max"])
        if d in ("uniform", "q_uniform"):
            raw = trial.suggest_float(key, s["min"], s["max"])
        elif d in ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"):
            raw = trial.suggest_float(key, s["min"], s["max"], log=True)
        elif d in ("beta", "q_beta"):
            raw = trial.suggest_float(key, 0.0, 1.0)
        else:
            u = trial.suggest_float(key, _QUANTILE_MARGIN, 1 - _QUANTILE_MARGIN)
            raw = NormalDist(s["mu"], s["sigma"] or 1e-12).inv_cdf(u)
            raw = math.exp(raw) if "log" in d else raw
        return _quantized(raw, s["q"]) if d.startswith("q_") else raw


def _quantized(value: float, q: float) -> float | int:
    """`value` rounded to a multiple of `q` (an int when q is one), as W&B's q_ distributions do."""
    steps = round(value / q)
    return int(steps * q) if _is_int(q) else float(f"{steps * q:.12g}")


def value_key(value: Any) -> str:
    """A key under which equal values are equal (3.0 and 3 alike), for telling grid points apart."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, default=str)


def parse_parameter(key: str, spec: Any, fail: Callable[[str], LbmError]) -> Parameter:
    """The parameter `key` from its sweep-file mapping `spec`, checked by W&B's rules at any nesting level;
    `fail(problem)` makes the error that names where it is."""
    if not isinstance(spec, dict):
        raise fail(f"must be a mapping such as {{values: [...]}} or {{min: ..., max: ...}}, got {spec!r}")
    distribution = spec.get("distribution")
    if distribution is None:
        distribution = _inferred(spec, fail)
    elif distribution in DEPRECATED:
        raise fail(
            f"distribution {distribution} is deprecated (its min and max are exponents); "
            f"use {DEPRECATED[distribution]} with min and max as the values themselves"
        )
    elif distribution not in DISTRIBUTIONS:
        raise fail(f"unknown distribution {distribution!r}; use one of {', '.join(DISTRIBUTIONS)}")
    allowed = DISTRIBUTIONS[distribution]
    unknown = sorted(set(spec) - set(allowed) - {"distribution"})
    if unknown:
        raise fail(
            f"key(s) {', '.join(unknown)} do not belong to distribution {distribution} "
            f"(it takes {', '.join(allowed)})"
        )
    for name in REQUIRED.get(distribution, ("min", "max") if "min" in allowed else ()):
        if name not in spec:
            raise fail(f"distribution {distribution} needs {name}")
    settings = {**allowed, **{k: v for k, v in spec.items() if k != "distribution"}}
    _check(distribution, settings, fail)
    return Parameter(key, distribution, settings)


def _inferred(spec: dict, fail: Callable[[str], LbmError]) -> str:
    """The distribution W&B infers from the keys when `distribution` is not given."""
    keys = set(spec)
    if "value" in keys:
        return "constant"
    if "values" in keys:
        return "categorical_w_probabilities" if "probabilities" in keys else "categorical"
    if {"min", "max"} <= keys:
        return "int_uniform" if _is_int(spec["min"]) and _is_int(spec["max"]) else "uniform"
    raise fail(
        f"cannot tell the distribution from key(s) {', '.join(sorted(keys)) or '(none)'}: give value, "
        "values, min and max, or a distribution (normal, beta, ... need `distribution`)"
    )


def _check(distribution: str, s: dict[str, Any], fail: Callable[[str], LbmError]) -> None:
    if "values" in s and (not isinstance(s["values"], list) or not s["values"]):
        raise fail("values must be a non-empty list")
    if distribution == "categorical_w_probabilities":
        p = s["probabilities"]
        if not isinstance(p, list) or not all(_is_number(x) and x >= 0 for x in p):
            raise fail("probabilities must be a list of numbers, each 0 or more")
        if len(p) != len(s["values"]):
            raise fail(f"values ({len(s['values'])}) and probabilities ({len(p)}) differ in length")
        if not math.isclose(sum(p), 1.0, abs_tol=1e-8):
            raise fail(f"probabilities {p} do not sum to 1 (sum {sum(p):g})")
    if "min" in s:
        for name in ("min", "max"):
            if not _is_number(s[name]):
                raise fail(f"{name} must be a number, got {s[name]!r}")
        if distribution == "int_uniform" and not (_is_int(s["min"]) and _is_int(s["max"])):
            raise fail(f"int_uniform needs whole numbers for min and max, got {s['min']!r} and {s['max']!r}")
        if not s["min"] < s["max"]:
            raise fail(f"min {s['min']} is not less than max {s['max']}")
        if "log" in distribution and not s["min"] > 0:
            raise fail(f"{distribution} needs min above 0 (the values themselves), got {s['min']}")
    if "q" in s and not (_is_number(s["q"]) and s["q"] > 0):
        raise fail(f"q must be a number above 0, got {s['q']!r}")
    if "mu" in s and not _is_number(s["mu"]):
        raise fail(f"mu must be a number, got {s['mu']!r}")
    if "sigma" in s and not (_is_number(s["sigma"]) and s["sigma"] >= 0):
        raise fail(f"sigma must be a number, 0 or more, got {s['sigma']!r}")
    for name in ("a", "b"):
        if name in s and not (_is_number(s[name]) and s[name] > 0):
            raise fail(f"{name} must be a number above 0, got {s[name]!r}")
