"""The embedded single-machine backend: SQLite job store, fair-share scheduler agent, attempt runner.

`LocalBackend` is imported on first use, so the attempt runner (`-m lbm.jobs.local.runner`) starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lbm.jobs.local.backend import LocalBackend

__all__ = ["LocalBackend"]


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from lbm.jobs.local.backend import LocalBackend

        return LocalBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
