"""Hydra overrides as users type them: `--config-overrides "a=1,b=[1,2]"` and the flags that set keys."""

from __future__ import annotations

from collections.abc import Iterable

from lbm.errors import LbmError

_CLOSING = {"[": "]", "{": "}", "(": ")"}


def split_overrides(text: str) -> list[str]:
    """The overrides in a comma-separated list; commas inside brackets, braces or quotes belong to a value.

    `"training.val_every=5,policy.down_dims=[64,128,256]"` → `["training.val_every=5",
    "policy.down_dims=[64,128,256]"]`.
    """
    items: list[str] = []
    current: list[str] = []
    open_brackets: list[str] = []
    quote: str | None = None
    escaped = False
    for char in text:
        current.append(char)
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _CLOSING:
            open_brackets.append(_CLOSING[char])
        elif char in _CLOSING.values():
            if not open_brackets or open_brackets.pop() != char:
                raise LbmError(f"unbalanced {char!r} in --config-overrides {text!r}")
        elif char == "," and not open_brackets:
            current.pop()
            items.append("".join(current))
            current = []
    if quote:
        raise LbmError(f"unclosed {quote} quote in --config-overrides {text!r}")
    if open_brackets:
        raise LbmError(f"missing {open_brackets[-1]!r} in --config-overrides {text!r}")
    items.append("".join(current))
    overrides = [item.strip() for item in items if item.strip()]
    for item in overrides:
        check_override(item)
    return overrides


def check_override(override: str) -> None:
    """An override is `key=value`, `+key=value`, `++key=value` or `~key`."""
    if override.startswith("~") or ("=" in override and override.split("=", 1)[0].strip("+~ ")):
        return
    raise LbmError(
        f"override {override!r} is not key=value (a comma outside brackets or quotes separates overrides; "
        "quote a value that contains commas)"
    )


def override_key(override: str) -> str:
    """The key an override sets: `+a.b=1` → `a.b`."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def merge_overrides(*groups: Iterable[str]) -> list[str]:
    """Overrides in order, a later one replacing an earlier one for the same key (flags beat files)."""
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            key = override_key(override)
            merged.pop(key, None)
            merged[key] = override
    return list(merged.values())


def quoted(value: str) -> str:
    """`value` as a single-quoted Hydra string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
