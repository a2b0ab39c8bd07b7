from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from lbm.launch.names import MAX_LENGTH, dns_safe, is_valid_job_name, job_name, kebab, next_moment, timestamp

MOMENT = datetime(2024, 4, 25, 16, 5, 4, 258_913, tzinfo=UTC)


def test_multitask_name_has_the_seed_format():
    assert job_name("kunimatsu", MOMENT) == "kunimatsu-lbm-training-2024-04-25-16-05-04-258"


def test_single_task_name_uses_the_task_in_kebab_case():
    assert (
        job_name("main", MOMENT, "PutCupOnSaucer")
        == "main-put-cup-on-saucer-training-2024-04-25-16-05-04-258"
    )


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("PutCupOnSaucer", "put-cup-on-saucer"),
        ("put_cup_on_saucer", "put-cup-on-saucer"),
        ("BimanualPlaceAppleFromBowlIntoBin", "bimanual-place-apple-from-bowl-into-bin"),
        ("HTMLParser v2", "html-parser-v2"),
        ("reach red/cube", "reach-red-cube"),
    ],
)
def test_kebab(task, expected):
    assert kebab(task) == expected


def test_owner_is_made_dns_safe():
    assert dns_safe("Jane.Doe_2+lbm") == "jane-doe-2-lbm"
    assert job_name("Jane.Doe", MOMENT).startswith("jane-doe-lbm-training-")


def test_timestamp_is_utc_to_the_millisecond():
    pacific = MOMENT.astimezone(timezone(timedelta(hours=-7)))
    assert timestamp(pacific) == "2024-04-25-16-05-04-258"


@pytest.mark.parametrize("task", [None, "x", "PutCupOnSaucer", "A" * 80 + "Task", "very_long_task_name_" * 5])
@pytest.mark.parametrize("owner", ["a", "someone-with-a-really-long-email-local-part-indeed", "x" * 100])
def test_long_names_are_cut_to_63_characters_keeping_the_timestamp(owner, task):
    name = job_name(owner, MOMENT, task)
    assert len(name) <= MAX_LENGTH
    assert is_valid_job_name(name)
    assert name.endswith("-training-2024-04-25-16-05-04-258")
    assert name.startswith(owner[:1])
    if task is None:
        assert name.endswith("-lbm-training-2024-04-25-16-05-04-258")


def test_single_task_name_keeps_part_of_owner_and_task_when_both_are_long():
    name = job_name("o" * 40, MOMENT, "t" * 40)
    stem = name.removesuffix("-training-2024-04-25-16-05-04-258")
    owner, task = stem.split("-")
    assert owner and task and len(stem) == 30


def test_next_moment_moves_the_name_on_by_one_millisecond():
    assert job_name("a", next_moment(MOMENT)) == "a-lbm-training-2024-04-25-16-05-04-259"


def test_name_pattern_rejects_bad_names():
    assert not is_valid_job_name("-leading-dash")
    assert not is_valid_job_name("under_score")
    assert not is_valid_job_name("a" * 64)
