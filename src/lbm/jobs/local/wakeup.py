"""Waking the agent through a FIFO in $LBM_HOME: a newline pokes it; a JSON line hands it a job's secrets.

Writers open the FIFO without blocking, so "no agent is reading" shows as a failed open (`send` is False).
Each message fits in PIPE_BUF bytes, so concurrent writers never interleave. Secrets pass through the pipe's
kernel buffer only: nothing is written to disk.
"""

from __future__ import annotations

import errno
import json
import os
import select
import stat
import time
from collections.abc import Mapping
from pathlib import Path

POKE = b"\n"
HANDOVER_WAIT_S = 2.0


def send(fifo: Path, message: bytes = POKE, *, wait_s: float = 0.0) -> bool:
    """Write one message; False when no agent listens. A full pipe drops a poke (the agent is busy anyway)."""
    if len(message) > select.PIPE_BUF:
        raise ValueError(f"wake-up message of {len(message)} bytes exceeds PIPE_BUF")
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno in (errno.ENXIO, errno.ENOENT):
            return False
        raise
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                os.write(fd, message)
                return True
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                select.select([], [fd], [], remaining)
    finally:
        os.close(fd)


def hand_over(fifo: Path, job: str, handoff: str, secrets: Mapping[str, str]) -> bool:
    """Give the agent `secrets` for job `job`, submitted with token `handoff`; False when no agent listens."""
    message = json.dumps({"job": job, "handoff": handoff, "secrets": dict(secrets)}).encode() + b"\n"
    return send(fifo, message, wait_s=HANDOVER_WAIT_S)


class WakeupReader:
    """The agent's end of the FIFO (opened read-write, so it never sees end-of-file)."""

    def __init__(self, fifo: Path):
        if fifo.exists() and not stat.S_ISFIFO(fifo.stat().st_mode):
            fifo.unlink()
        if not fifo.exists():
            os.mkfifo(fifo, 0o600)
        self._fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self._partial = b""

    def fileno(self) -> int:
        return self._fd

    def read(self) -> list[dict]:
        """Drain what is waiting; the secret hand-overs among it (pokes carry nothing)."""
        data = self._partial
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        *lines, self._partial = data.split(b"\n")
        handovers = []
        for line in lines:
            if line.strip():
                try:
                    handovers.append(json.loads(line))
                except ValueError:
                    continue
        return handovers

    def close(self) -> None:
        os.close(self._fd)
