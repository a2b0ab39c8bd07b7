"""Checks a request against botocore's own model of an AWS API before it is sent.

botocore's `ParamValidator` checks types, required members and minimums; this adds what it leaves to the
service: enums, maximum lengths and values, and patterns (the model's patterns, matched whole).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from lbm.errors import LbmError


class RequestInvalid(LbmError):
    """A request the service would refuse: `<Operation> request: <member path>: <problem>`."""


@functools.cache
def operation_model(service: str, operation: str) -> Any:
    """botocore's OperationModel for `operation` of `service` (e.g. "sagemaker", "CreateTrainingJob")."""
    import botocore.session

    return botocore.session.get_session().get_service_model(service).operation_model(operation)


def check_request(service: str, operation: str, params: dict[str, Any]) -> None:
    """Raise RequestInvalid naming the first member of `params` the service's model refuses."""
    from botocore.validate import ParamValidator

    shape = operation_model(service, operation).input_shape
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise RequestInvalid(f"{operation} request: {report.generate_report().splitlines()[0]}")
    for path, problem in _constraint_problems(params, shape, ""):
        raise RequestInvalid(f"{operation} request: {path or '(top level)'}: {problem}")


def _constraint_problems(value: Any, shape: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, problem) for each enum, maximum and pattern rule of `shape` that `value` breaks."""
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        for name, member in shape.members.items():
            if name in value:
                yield from _constraint_problems(value[name], member, f"{path}.{name}".lstrip("."))
        return
    if kind == "list":
        yield from _size_problem(len(value), meta, path, "items")
        for index, item in enumerate(value):
            yield from _constraint_problems(item, shape.member, f"{path}[{index}]")
        return
    if kind == "map":
        yield from _size_problem(len(value), meta, path, "entries")
        for key, item in value.items():
            yield from _constraint_problems(key, shape.key, f"{path} key {key!r}")
            yield from _constraint_problems(item, shape.value, f"{path}.{key}")
        return
    if kind == "string":
        if shape.enum and value not in shape.enum:
            yield path, f"{value!r} is not one of the {len(shape.enum)} values the service accepts"
        yield from _size_problem(len(value), meta, path, "characters")
        pattern = meta.get("pattern")
        if pattern and _pattern(pattern).fullmatch(value) is None:
            yield path, f"{value!r} does not match the pattern {pattern}"
        return
    if kind in ("integer", "long", "float", "double") and "max" in meta and value > meta["max"]:
        yield path, f"{value} is above the maximum {meta['max']}"


def _size_problem(size: int, meta: dict[str, Any], path: str, unit: str) -> Iterator[tuple[str, str]]:
    if "max" in meta and size > meta["max"]:
        yield path, f"has {size} {unit}, more than the maximum {meta['max']}"


@functools.cache
def _pattern(pattern: str) -> Any:
    """The model's (Java-style) pattern, compiled with `regex`, which knows `\\p{L}` classes."""
    import regex

    return regex.compile(pattern)
