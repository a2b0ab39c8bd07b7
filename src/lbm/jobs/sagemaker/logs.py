"""A training job's CloudWatch log: every host's stream (`/aws/sagemaker/TrainingJobs`,
`<training job>/algo-N-<epoch>`) interleaved by time, each line with its host prefix, `[algo-1] ...`.
"""

from __future__ import annotations

import contextlib
import heapq
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TAIL_LINES = 100
_HOST = re.compile(r"(algo-\d+)(?:-\d+)?$")


def host_of(stream_name: str) -> str:
    """The host of a stream name: `AWSBatchjob1/algo-2-1712345678` -> `algo-2`."""
    leaf = stream_name.rsplit("/", 1)[-1]
    match = _HOST.match(leaf)
    return match.group(1) if match else leaf


class _Stream:
    """One host's log stream and how far it has been read."""

    def __init__(self, client: Any, name: str):
        self.client = client
        self.name = name
        self.host = host_of(name)
        self.token: str | None = None

    def _page(self, **params: Any) -> dict[str, Any]:
        return self.client.get_log_events(logGroupName=LOG_GROUP, logStreamName=self.name, **params)

    def read_forward(self) -> list[tuple[int, str]]:
        """Every event after the last one read (from the first when nothing was read yet)."""
        events: list[tuple[int, str]] = []
        while True:
            params: dict[str, Any] = {"startFromHead": True}
            if self.token:
                params["nextToken"] = self.token
            page = self._page(**params)
            events += [(e["timestamp"], e["message"]) for e in page["events"]]
            if page["nextForwardToken"] == self.token:
                return events
            self.token = page["nextForwardToken"]

    def read_tail(self, lines: int) -> list[tuple[int, str]]:
        """The last `lines` events; following goes on from there."""
        page = self._page(startFromHead=False, limit=lines)
        self.token = page["nextForwardToken"]
        return [(e["timestamp"], e["message"]) for e in page["events"]]


class TrainingJobLogs:
    """The log of the training job `training_job` (the name Batch gave it), read with a Logs client."""

    def __init__(self, client: Any, training_job: str):
        self.client = client
        self.training_job = training_job
        self._streams: dict[str, _Stream] = {}

    def _new_streams(self) -> list[_Stream]:
        prefix = f"{self.training_job}/"
        found = []
        for page in self.client.get_paginator("describe_log_streams").paginate(
            logGroupName=LOG_GROUP, logStreamNamePrefix=prefix
        ):
            for info in page["logStreams"]:
                name = info["logStreamName"]
                if name.startswith(prefix) and name not in self._streams:
                    self._streams[name] = _Stream(self.client, name)
                    found.append(self._streams[name])
        return found

    def lines(
        self,
        *,
        from_head: bool = False,
        follow: bool = False,
        still_running: Callable[[], bool] = lambda: False,
        poll_interval_s: float = 5.0,
        tail: int = TAIL_LINES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[str]:
        """Lines of every host by time: the last `tail` (or all with `from_head`); with `follow`, then what
        is written until `still_running()` is false (what came before it turned false is included)."""
        try:
            streams = self._new_streams()
        except self.client.exceptions.ResourceNotFoundException:
            streams = []
        if from_head:
            first = [self._labelled(s, s.read_forward()) for s in streams]
            yield from (line for _, line in heapq.merge(*first))
        else:
            last = heapq.merge(*(self._labelled(s, s.read_tail(tail)) for s in streams))
            yield from [line for _, line in last][-tail:]
        while follow:
            running = still_running()
            with contextlib.suppress(self.client.exceptions.ResourceNotFoundException):
                self._new_streams()
            batches = [self._labelled(s, s.read_forward()) for s in self._streams.values()]
            yield from (line for _, line in heapq.merge(*batches))
            if not running:
                return
            sleep(poll_interval_s)

    @staticmethod
    def _labelled(stream: _Stream, events: list[tuple[int, str]]) -> list[tuple[int, str]]:
        return [(stamp, f"[{stream.host}] {message.rstrip(chr(10))}") for stamp, message in events]
