"""
The portal's two limits: the per-IP leaky bucket and the per-method operating-time limit.

Leaky bucket: every ``/rest/`` HTTP request adds 1 to the counter of its source IP (a batch is one request) and the
counter drains at ``per_second``; a request that finds the counter above ``burst`` is refused with
``QUERY_LIMIT_EXCEEDED``.

Operating limit: for each credential (webhook code or OAuth client id) and method, execution seconds are summed in
buckets of ``operating_bucket`` seconds; a bucket opens with the first call after the previous one closed and counts
for ``operating_window`` seconds from then. A call that finds the live sum above ``operating_limit`` is refused with
``OPERATION_TIME_LIMIT``; the call that crosses the limit completes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_provider_bitrix24.sandbox.config import SandboxConfig

Clock = Callable[[], float]


@dataclass
class _Bucket:
    level: float = 0.0
    updated: float = 0.0


class LeakyBucket:
    """Request-rate limiter keyed by source IP; reads its thresholds from the live config."""

    def __init__(self, config: SandboxConfig, clock: Clock = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def set_config(self, config: SandboxConfig) -> None:
        self._config = config

    def admit(self, key: str) -> bool:
        """Count one request from ``key``; ``False`` when it must be refused."""
        config = self._config
        if not config.rate_limit_enabled:
            return True
        with self._lock:
            now = self._clock()
            bucket = self._buckets.setdefault(key, _Bucket(0.0, now))
            bucket.level = max(0.0, bucket.level - (now - bucket.updated) * config.per_second)
            bucket.updated = now
            if bucket.level > config.burst:
                if config.count_rejected:
                    bucket.level += 1
                return False
            bucket.level += 1
            return True

    def level(self, key: str) -> float:
        """Current counter of ``key`` after draining."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            elapsed = self._clock() - bucket.updated
            return max(0.0, bucket.level - elapsed * self._config.per_second)

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


@dataclass
class _Window:
    buckets: list[list[float]] = field(default_factory=list)  # [opened_at, seconds]


@dataclass(frozen=True)
class OperatingStatus:
    """Accumulated execution seconds of one method and when its oldest bucket expires (Unix time)."""

    operating: float
    reset_at: int | None


class OperatingLimiter:
    """Per (credential, method) execution-time limiter; reads its thresholds from the live config."""

    def __init__(self, config: SandboxConfig, clock: Clock = time.time) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}

    def set_config(self, config: SandboxConfig) -> None:
        self._config = config

    def _live(self, key: tuple[str, str], now: float) -> _Window:
        window = self._windows.setdefault(key, _Window())
        lifetime = self._config.operating_window
        window.buckets = [b for b in window.buckets if now - b[0] < lifetime]
        return window

    def blocked(self, credential: str, method: str) -> bool:
        """Whether the method is over the limit for this credential before the call."""
        config = self._config
        if not config.operating_enabled:
            return False
        with self._lock:
            window = self._live((credential, method), self._clock())
            return sum(b[1] for b in window.buckets) > config.operating_limit

    def record(self, credential: str, method: str, seconds: float) -> OperatingStatus:
        """Charge ``seconds`` of execution to the current bucket and return the new totals."""
        with self._lock:
            now = self._clock()
            window = self._live((credential, method), now)
            if not window.buckets or now - window.buckets[-1][0] >= self._config.operating_bucket:
                window.buckets.append([now, 0.0])
            window.buckets[-1][1] += max(0.0, seconds)
            return self._status(window)

    def status(self, credential: str, method: str) -> OperatingStatus:
        with self._lock:
            return self._status(self._live((credential, method), self._clock()))

    def _status(self, window: _Window) -> OperatingStatus:
        if not window.buckets:
            return OperatingStatus(0.0, None)
        total = float(sum(b[1] for b in window.buckets))
        return OperatingStatus(total, math.ceil(window.buckets[0][0] + self._config.operating_window))

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()
