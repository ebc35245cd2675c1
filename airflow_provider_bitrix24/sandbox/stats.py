"""Counters of what the portal answered, for ``GET /_sandbox/stats`` and ``SandboxPortal.stats()``."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any


class Stats:
    """
    Request counters.

    ``requests`` counts ``/rest/`` HTTP requests; ``by_method``, ``by_status`` and ``errors`` count their
    top-level answers (status 0 = no answer: the connection was dropped or left hanging); ``batch_commands``
    counts commands run inside batches and ``batch_errors`` their error codes; ``log`` holds
    ``[unix_time, method, status]`` of the latest requests.
    """

    def __init__(self, log_size: int = 20000) -> None:
        self._lock = threading.Lock()
        self._log_size = log_size
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests = 0
            self._oauth_requests = 0
            self._by_method: Counter[str] = Counter()
            self._by_status: Counter[str] = Counter()
            self._errors: Counter[str] = Counter()
            self._batch_errors: Counter[str] = Counter()
            self._batch_commands = 0
            self._log: deque[list[Any]] = deque(maxlen=self._log_size)

    def request(self, method: str, status: int, error: str | None = None) -> None:
        with self._lock:
            self._requests += 1
            self._by_method[method] += 1
            self._by_status[str(status)] += 1
            if error:
                self._errors[error] += 1
            self._log.append([time.time(), method, status])

    def batch_command(self, error: str | None = None) -> None:
        with self._lock:
            self._batch_commands += 1
            if error:
                self._batch_errors[error] += 1

    def oauth_request(self) -> None:
        with self._lock:
            self._oauth_requests += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "by_method": dict(self._by_method),
                "by_status": dict(self._by_status),
                "errors": dict(self._errors),
                "batch_commands": self._batch_commands,
                "batch_errors": dict(self._batch_errors),
                "oauth_requests": self._oauth_requests,
                "log": [list(entry) for entry in self._log],
            }


def refused_by_bucket(times: Iterable[float], burst: int, per_second: float) -> int:
    """
    How many requests sent at these times a portal's leaky bucket would refuse.

    Replays a request log (``stats()["log"]`` timestamps) through the bucket the portal applies: the counter
    drains at ``per_second`` and a request is refused while it is above ``burst``.
    """
    level, last, refused = 0.0, None, 0
    for stamp in sorted(times):
        if last is not None:
            level = max(0.0, level - (stamp - last) * per_second)
        last = stamp
        if level > burst:
            refused += 1
        else:
            level += 1
    return refused


def peak_in_window(times: Iterable[float], window: float) -> int:
    """The most requests inside any ``window`` seconds of a request log."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, stamp in enumerate(ordered):
        while stamp - ordered[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best
