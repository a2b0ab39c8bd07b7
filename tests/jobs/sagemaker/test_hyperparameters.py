"""The escape of hyperparameter values SageMaker would refuse, and its restore in the container."""

from __future__ import annotations

import random
import re
import string

import pytest

from lbm.jobs.sagemaker.hyperparameters import ESCAPE_MARK, escape_value, restore_all, restore_value

# SageMaker's rule: a value of exactly 40 characters of this set could be an AWS secret key.
REFUSED = re.compile(r"[A-Za-z0-9/+=]{40}")
SECRET_LIKE = string.ascii_letters + string.digits + "/+="


def random_value(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return "".join(rng.choice(SECRET_LIKE) for _ in range(40))
    if kind == 1:
        return ESCAPE_MARK * rng.randint(1, 3) + "".join(
            rng.choice(SECRET_LIKE) for _ in range(rng.randint(0, 41))
        )
    length = rng.choice([0, 1, 39, 40, 41, 200])
    return "".join(rng.choice(SECRET_LIKE + "-_.:~ ,[]") for _ in range(length))


@pytest.mark.parametrize(
    "value",
    [
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # the documented example of a secret key: 40 characters
        "a" * 40,
        "s3://robotics-manip-lbm/sagemaker_outputs/main-lbm/job/config.yaml",
        "",
        "2",
        ESCAPE_MARK,
        ESCAPE_MARK + "a" * 40,
    ],
)
def test_every_value_comes_back_and_none_is_refused(value):
    escaped = escape_value(value)
    assert not REFUSED.fullmatch(escaped)
    assert restore_value(escaped) == value


def test_values_that_need_no_escape_travel_as_they_are():
    for value in ["a" * 39, "a" * 41, "s3://bucket/" + "a" * 28, "0123456789012345678901234567890123456789-"]:
        assert escape_value(value) == value


def test_random_values_round_trip():
    rng = random.Random(0)
    for _ in range(5000):
        value = random_value(rng)
        escaped = escape_value(value)
        assert not REFUSED.fullmatch(escaped), value
        assert restore_value(escaped) == value


def test_restore_all_restores_each_value():
    values = {"config-uri": "s3://b/config.yaml", "token-like": "A" * 40, "mark": ESCAPE_MARK + "x"}
    assert restore_all({name: escape_value(v) for name, v in values.items()}) == values
