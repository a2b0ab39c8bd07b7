"""Signalling an attempt's process group only while its runner is the one we started (pid, start time)."""

from __future__ import annotations

import os

import psutil


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch, as psutil reports it), or None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def signal_attempt(pid: int | None, pid_started_at: float | None, sig: int) -> bool:
    """Signal the process group led by runner `pid` if that runner (started at `pid_started_at`) still lives.

    A pid reused by another process has another start time and is left alone.
    """
    if pid is None or pid_started_at is None:
        return False
    started = process_start_time(pid)
    if started is None or abs(started - pid_started_at) > 1e-3:
        return False
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True
