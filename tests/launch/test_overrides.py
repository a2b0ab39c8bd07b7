from __future__ import annotations

import pytest

from lbm.errors import LbmError
from lbm.launch.overrides import merge_overrides, override_key, quoted, split_overrides


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("training.val_every=5", ["training.val_every=5"]),
        (
            "training.val_every=5,policy.down_dims=[64,128,256]",
            ["training.val_every=5", "policy.down_dims=[64,128,256]"],
        ),
        ("a={x: 1, y: [2,3]},b=2", ["a={x: 1, y: [2,3]}", "b=2"]),
        ("a='x,y',b=\"p,q\"", ["a='x,y'", 'b="p,q"']),
        ("a='it\\'s,fine',b=1", ["a='it\\'s,fine'", "b=1"]),
        ("  a=1 , +b.c=2,~d ,", ["a=1", "+b.c=2", "~d"]),
        (
            "training.val_per_step=True,training.val_every=5",
            ["training.val_per_step=True", "training.val_every=5"],
        ),
        ("a=[[1,2],[3,4]],b=(1,2)", ["a=[[1,2],[3,4]]", "b=(1,2)"]),
    ],
)
def test_split_keeps_commas_inside_values(text, expected):
    assert split_overrides(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=[1,2", "missing ']'"),
        ("a=1]", "unbalanced ']'"),
        ("a={x: [1}", "unbalanced '}'"),
        ("a='open", "unclosed ' quote"),
        ("training.val_every=5,6", "override '6' is not key=value"),
        ("=3", "override '=3' is not key=value"),
    ],
)
def test_malformed_lists_are_user_errors(text, message):
    with pytest.raises(LbmError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split_overrides(text)


def test_later_override_of_a_key_wins_and_keeps_the_rest_in_order():
    merged = merge_overrides(["a=1", "b=2", "+c=3"], ["a=9", "c=4"])
    assert merged == ["b=2", "a=9", "c=4"]
    assert override_key("++x.y=1") == "x.y"


def test_quoted_escapes_quotes():
    assert quoted("it's") == "'it\\'s'"
