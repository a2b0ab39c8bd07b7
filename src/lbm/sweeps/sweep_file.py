"""A W&B sweep file: read, checked by W&B's rules (and the value checks at every nesting level), and its
parameters flattened to dotted Hydra keys (`optimizer: {parameters: {lr: ...}}` -> `optimizer.lr`)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lbm.errors import LbmError
from lbm.sweeps.parameters import Parameter, parse_parameter

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
# Keys W&B accepts that a sweep keeps as they are (and W&B's, which this engine does not use).
KEPT_KEYS = ("project", "entity", "name", "description", "command", "program")
IGNORED_KEYS = ("apiVersion", "kind", "controller", "job", "image_uri")
TOP_KEYS = ("method", "metric", "parameters", "run_cap", "early_terminate", *KEPT_KEYS, *IGNORED_KEYS)
UNSUPPORTED_KEYS = {
    "metrics": "several metrics need W&B's method: custom, which this engine does not run",
    "scheduler": "a custom scheduler needs W&B's method: custom, which this engine does not run",
}
CONDITIONAL = "conditional"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
EXAMPLES_PACKAGE = "lbm.sweeps.examples"
SWEEP_DIR = Path("sweep")


@dataclass(frozen=True)
class Metric:
    name: str
    goal: str = "minimize"
    target: float | None = None

    def reached(self, value: float) -> bool:
        """Whether `value` meets the target (the sweep then ends)."""
        if self.target is None:
            return False
        return value <= self.target if self.goal == "minimize" else value >= self.target


@dataclass(frozen=True)
class Hyperband:
    """W&B's hyperband early termination: the milestones (in logged values of the metric) and the rule."""

    bands: tuple[int, ...]
    eta: float
    strict: bool


@dataclass(frozen=True)
class SweepFile:
    """A checked sweep file; `parameters` maps dotted Hydra keys (and `conditional`) to parameters."""

    method: str
    parameters: dict[str, Parameter]
    metric: Metric | None = None
    run_cap: int | None = None
    early_terminate: Hyperband | None = None
    kept: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def grid(self) -> list[dict[str, Any]]:
        """Every point of a grid sweep, in W&B's order (the last parameter varies fastest)."""
        import itertools

        keys = list(self.parameters)
        values = [self.parameters[k].grid_values() for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def parse_sweep(data: Any, source: str) -> SweepFile:
    """The sweep in `data` (a sweep file's mapping); LbmError naming the key for anything W&B would reject,
    and for values that make no sense at any nesting level."""

    def fail(key: str, problem: str) -> LbmError:
        return LbmError(f"sweep file {source}: {key}: {problem}")

    if not isinstance(data, dict):
        raise LbmError(f"sweep file {source}: must be a mapping with method and parameters")
    for key in data:
        if key in UNSUPPORTED_KEYS:
            raise fail(key, UNSUPPORTED_KEYS[key])
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (allowed: {', '.join(TOP_KEYS)})"
            raise fail(str(key), f"unknown key{hint}")
    method = data.get("method")
    if method is None:
        raise fail("method", f"is required: one of {', '.join(METHODS)}")
    if method not in METHODS:
        raise fail("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    metric = _metric(data.get("metric"), fail)
    if "parameters" not in data:
        raise fail("parameters", "is required: a mapping of the config keys to sweep")
    parameters: dict[str, Parameter] = {}
    _flatten(data["parameters"], "", "parameters", parameters, fail)
    run_cap = data.get("run_cap")
    if run_cap is not None and not (
        isinstance(run_cap, int) and not isinstance(run_cap, bool) and run_cap > 0
    ):
        raise fail("run_cap", f"must be a whole number above 0, got {run_cap!r}")
    hyperband = _hyperband(data.get("early_terminate"), fail)
    if method == "bayes" and metric is None:
        raise fail("metric", "is required by method bayes (name and goal of the metric to optimise)")
    if hyperband is not None and metric is None:
        raise fail("metric", "is required by early_terminate (hyperband compares runs by it)")
    if method == "grid":
        for key, parameter in parameters.items():
            if not parameter.is_discrete:
                raise fail(
                    _where(key),
                    f"grid search cannot enumerate distribution {parameter.distribution}; use values, "
                    "int_uniform or q_uniform, or method random or bayes (a grid takes no probabilities)",
                )
    for key in ("project", "entity", "name", "description", "program"):
        if key in data and not isinstance(data[key], str):
            raise fail(key, f"must be a string, got {data[key]!r}")
    if "command" in data and not isinstance(data["command"], list):
        raise fail("command", f"must be a list, got {data['command']!r}")
    kept = {key: data[key] for key in KEPT_KEYS if key in data}
    return SweepFile(method, parameters, metric, run_cap, hyperband, kept, dict(data))


def _where(key: str) -> str:
    return "parameters." + ".parameters.".join(key.split("."))


def _flatten(node: Any, prefix: str, where: str, out: dict[str, Parameter], fail) -> None:
    if not isinstance(node, dict) or not node:
        raise fail(where, "must be a non-empty mapping of parameter names to their definitions")
    for name, spec in node.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise fail(
                f"{where}.{name}",
                "a parameter name starts with a letter or _ and holds letters, digits, _ . -",
            )
        key = f"{prefix}{name}"
        here = f"{where}.{name}"
        if isinstance(spec, dict) and "parameters" in spec:
            extra = sorted(set(spec) - {"parameters"})
            if extra:
                raise fail(here, f"a nested parameter holds only `parameters`, not {', '.join(extra)}")
            if key == CONDITIONAL:
                raise fail(
                    here, "conditional takes values (names of conditional config files), not parameters"
                )
            _flatten(spec["parameters"], f"{key}.", f"{here}.parameters", out, fail)
            continue
        if isinstance(spec, dict) and not spec:
            raise fail(here, "is empty; give value, values, min and max, or a distribution")
        parameter = parse_parameter(key, spec, lambda problem, here=here: fail(here, problem))
        if key in out:
            raise fail(here, f"sets {key} a second time")
        if key == CONDITIONAL and parameter.distribution not in (
            "constant",
            "categorical",
            "categorical_w_probabilities",
        ):
            raise fail(
                here, "conditional takes value or values: names of files in ./sweep/config/conditional"
            )
        if key == CONDITIONAL:
            names = [parameter["value"]] if parameter.distribution == "constant" else parameter["values"]
            bad = [n for n in names if not isinstance(n, str) or not n or "/" in n]
            if bad:
                raise fail(here, f"conditional values are file names without .yaml, got {bad[0]!r}")
        out[key] = parameter


def _metric(value: Any, fail) -> Metric | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("metric", "must be a mapping with name and goal")
    unknown = sorted(set(value) - {"name", "goal", "target", "impute", "impute_while_running"})
    if unknown:
        raise fail(f"metric.{unknown[0]}", "unknown key (allowed: name, goal, target)")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise fail("metric.name", "is required: the name of a metric the training logs, e.g. val_loss")
    goal = value.get("goal", "minimize")
    if goal not in GOALS:
        raise fail("metric.goal", f"must be minimize or maximize, got {goal!r}")
    target = value.get("target")
    if target is not None and not (isinstance(target, int | float) and not isinstance(target, bool)):
        raise fail("metric.target", f"must be a number, got {target!r}")
    return Metric(name, goal, None if target is None else float(target))


def _hyperband(value: Any, fail) -> Hyperband | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("early_terminate", "must be a mapping with type: hyperband")
    unknown = sorted(set(value) - {"type", "min_iter", "max_iter", "s", "eta", "strict"})
    if unknown:
        raise fail(
            f"early_terminate.{unknown[0]}", "unknown key (allowed: type, min_iter, max_iter, s, eta, strict)"
        )
    if value.get("type") != "hyperband":
        raise fail("early_terminate.type", f"must be hyperband, got {value.get('type')!r}")
    eta = value.get("eta", 3)
    if not (isinstance(eta, int | float) and not isinstance(eta, bool) and eta > 1):
        raise fail("early_terminate.eta", f"must be a number above 1, got {eta!r}")
    strict = value.get("strict", True)
    if not isinstance(strict, bool):
        raise fail("early_terminate.strict", f"must be true or false, got {strict!r}")

    def whole(key: str, least: int) -> int:
        number = value[key]
        if not (isinstance(number, int) and not isinstance(number, bool) and number >= least):
            raise fail(f"early_terminate.{key}", f"must be a whole number, {least} or more, got {number!r}")
        return number

    if "min_iter" in value:
        if "max_iter" in value or "s" in value:
            raise fail("early_terminate", "give min_iter, or max_iter with s, not both")
        band, bands = float(whole("min_iter", 1)), []
        for _ in range(100):
            bands.append(int(band))
            band *= eta
            if band > 1e9:
                break
    elif "max_iter" in value and "s" in value:
        max_iter, s = whole("max_iter", 1), whole("s", 1)
        bands, band = [], float(max_iter)
        for _ in range(s):
            band /= eta
            if band < 1:
                break
            bands.append(int(band))
        if not bands:
            raise fail(
                "early_terminate", f"max_iter {max_iter} / eta {eta} leaves no milestone; raise max_iter"
            )
    else:
        raise fail("early_terminate", "needs min_iter, or max_iter with s")
    return Hyperband(tuple(sorted(set(bands))), float(eta), strict)


def read_sweep_file(path: Path) -> SweepFile:
    """The sweep in the YAML file at `path`."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LbmError(f"sweep file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as error:
        raise LbmError(f"sweep file {path}: cannot read it as YAML: {' '.join(str(error).split())}") from None
    return parse_sweep(data, str(path))


def example_path(*parts: str) -> Path:
    """A file among the sweep examples shipped with lbm."""
    return Path(str(resources.files(EXAMPLES_PACKAGE))).joinpath(*parts)


def find_sweep_file(name: str) -> Path:
    """The sweep file `name`: a path as given, else in ./sweep/, else among the shipped examples."""
    for candidate in (Path(name), SWEEP_DIR / name, example_path(name)):
        if candidate.is_file():
            return candidate
    shipped = sorted(p.name for p in example_path().glob("*.yaml"))
    raise LbmError(
        f"sweep file {name} is neither a file, nor in ./{SWEEP_DIR}/, nor a shipped example "
        f"({', '.join(shipped)})"
    )
