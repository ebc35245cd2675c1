"""
Client-side copies of the portal's two limits, so that the client waits instead of drawing errors.

* :class:`LeakyBucket` mirrors the request-rate limit: every HTTP request adds one unit, the bucket drains at
  ``per_second`` and holds ``burst`` units. One bucket is shared by every client of the same portal in the
  process (:func:`shared_bucket`), from any thread or event loop: reserving a slot is a short computation under
  a lock, and the caller then sleeps (``time.sleep`` or ``asyncio.sleep``) outside it.
* :class:`OperatingTracker` remembers ``time.operating`` and ``time.operating_reset_at`` per method, as the
  portal reports them, to know when a method blocked by ``OPERATION_TIME_LIMIT`` unblocks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from airflow_provider_bitrix24.client.config import RateLimit

#: The client paces at this share of the portal's drain rate, to absorb clock differences.
RATE_SAFETY: Final = 0.98
#: Default operating-time budget of one method per 10 minutes, in seconds.
OPERATING_LIMIT: Final = 480.0


class LeakyBucket:
    """
    A leaky bucket of ``burst`` units draining at ``per_second``, as the portal keeps one per source IP.

    :meth:`reserve` books one unit and returns how long the caller must wait before sending, so that the
    portal's counter, which is checked before each request, never goes above ``burst``.
    """

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._level = 0.0
        self._stamp = clock()
        self.configure(limit)

    def configure(self, limit: RateLimit) -> None:
        """Change the bucket's size and rate, keeping its current level."""
        with self._lock:
            self.limit = limit
            self._capacity = float(limit.burst)
            self._rate = limit.per_second * RATE_SAFETY

    def _drain(self, now: float) -> None:
        self._level = max(0.0, self._level - (now - self._stamp) * self._rate)
        self._stamp = now

    def reserve(self) -> float:
        """Book one request; return the seconds to wait before sending it (0 when there is room now)."""
        with self._lock:
            now = self._clock()
            self._drain(now)
            self._level += 1.0
            excess = self._level - self._capacity
            return excess / self._rate if excess > 0 else 0.0

    def note_rejected(self) -> None:
        """The portal said the bucket is full: another process is using it too, so assume it is full."""
        with self._lock:
            self._drain(self._clock())
            self._level = max(self._level, self._capacity)


_buckets: dict[str, LeakyBucket] = {}
_buckets_lock = threading.Lock()


def shared_bucket(portal_key: str, limit: RateLimit) -> LeakyBucket:
    """Return the process-wide bucket of a portal, creating it or updating its limits."""
    with _buckets_lock:
        bucket = _buckets.get(portal_key)
        if bucket is None:
            bucket = _buckets[portal_key] = LeakyBucket(limit)
        elif bucket.limit != limit:
            bucket.configure(limit)
        return bucket


@dataclass
class _MethodUsage:
    operating: float = 0.0
    reset_at: float | None = None


class OperatingTracker:
    """Per-method record of the portal's accumulated operating time for one credential."""

    def __init__(self, limit: float = OPERATING_LIMIT, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._usage: dict[str, _MethodUsage] = {}

    def record(self, method: str, time_block: Mapping[str, Any] | None) -> float | None:
        """Store the ``time`` block of a successful answer; return the method's operating seconds."""
        if not isinstance(time_block, Mapping) or "operating" not in time_block:
            return None
        try:
            operating = float(time_block["operating"])
        except (TypeError, ValueError):
            return None
        reset_raw = time_block.get("operating_reset_at")
        try:
            reset_at = float(reset_raw) if reset_raw is not None else None
        except (TypeError, ValueError):
            reset_at = None
        with self._lock:
            self._usage[method.lower()] = _MethodUsage(operating=operating, reset_at=reset_at)
        return operating

    def unblocks_at(self, method: str) -> float | None:
        """When a blocked method is expected to be callable again: its oldest bucket's expiry, if known."""
        with self._lock:
            usage = self._usage.get(method.lower())
            return usage.reset_at if usage else None

    def wait_before(self, method: str) -> float:
        """Seconds to hold a call of ``method`` because its known operating time is over the limit."""
        with self._lock:
            usage = self._usage.get(method.lower())
            if usage is None or usage.operating <= self.limit or usage.reset_at is None:
                return 0.0
            return max(0.0, usage.reset_at - self._clock())
