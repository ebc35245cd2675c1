"""
Client-side copies of the portal's two limits, so that the client waits instead of drawing errors.

* :class:`LeakyBucket` mirrors the request-rate limit: every HTTP request adds one unit, the bucket drains at
  ``per_second`` and holds ``burst`` units. The portal keeps one bucket per portal, so one bucket is shared by every
  client of the same portal in the process (:func:`shared_bucket`), from any thread or event loop: reserving a slot
  is a short computation under a lock (no I/O ever happens under it), and the caller then sleeps outside it.
* :class:`OperatingTracker` remembers each method's ``time.operating`` and ``time.operating_reset_at`` as the portal
  reports them for one credential, and which methods are blocked by ``OPERATION_TIME_LIMIT`` until when.

:class:`Limiter` is what the client asks before each request; :class:`LocalLimiter` keeps both in this process.
When several processes share a portal, :mod:`airflow_provider_bitrix24.client.limits_redis` keeps them in Redis.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

from airflow_provider_bitrix24.client.coerce import as_seconds
from airflow_provider_bitrix24.client.config import OAuthCredentials, PortalConfig, RateLimit, WebhookAuth
from airflow_provider_bitrix24.client.retry import level_after_rejection

#: The client paces at this share of the portal's drain rate, to absorb clock differences.
RATE_SAFETY: Final = 0.98
#: Seconds a request may take from its booked slot to the portal's counter (a late wake-up of the sleeping
#: thread or process, the network). Requests booked in order can reach the portal bunched up by this much; see
#: :func:`usable_burst`.
LATENCY_ALLOWANCE: Final = 0.5
#: Default operating-time budget of one method per 10 minutes, in seconds.
OPERATING_LIMIT: Final = 480.0
#: The portal's operating window; a reset announced further ahead than this (plus slack) is not believed.
OPERATING_WINDOW: Final = 600.0
#: How long a method blocked by ``OPERATION_TIME_LIMIT`` is held when the portal did not say until when.
UNKNOWN_BLOCK: Final = 10.0


class Grant(NamedTuple):
    """
    The answer to "may I send a request of this method?".

    :param wait: Seconds to wait before sending; the slot is booked.
    :param blocked_until: Unix time at which the method unblocks; when set, nothing was booked.
    """

    wait: float
    blocked_until: float | None = None


class Limiter(Protocol):
    """
    What every client of one portal must agree on before sending: the request budget and the blocked methods.

    The ``a``-prefixed twins are for event loops; a backend without I/O implements them by calling the plain ones.
    """

    def acquire(self, method: str, force: bool = False) -> Grant: ...

    async def aacquire(self, method: str, force: bool = False) -> Grant: ...

    def headroom(self) -> int: ...

    async def aheadroom(self) -> int: ...

    def report_rejected(self) -> None: ...

    async def areport_rejected(self) -> None: ...

    def report_blocked(self, method: str, until: float) -> None: ...

    async def areport_blocked(self, method: str, until: float) -> None: ...

    def observe(self, method: str, time_block: Mapping[str, Any] | None) -> float | None: ...

    def blocked_until(self, method: str) -> float | None: ...

    def unblocks_at(self, method: str) -> float | None: ...

    def operating(self, method: str) -> float: ...

    def refresh_lock(self, name: str) -> contextlib.AbstractContextManager[None]: ...

    def arefresh_lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]: ...


def usable_burst(limit: RateLimit) -> int:
    """
    The units of the portal's bucket the client fills: ``burst`` less a reserve for requests that arrive late.

    The portal drains its counter from when requests arrive, so requests that waited for their slots and reach it
    up to :data:`LATENCY_ALLOWANCE` late can arrive together with the next ones: ``per_second`` times that many
    more than the client booked. The portal refuses a request only once its counter is above ``burst``, which
    absorbs one of them; the rest are kept free here (at most half of the bucket). The standard plan (50, 2 per
    second) keeps none, the enterprise plan (250, 5 per second) keeps 2.
    """
    late = max(0, math.ceil(limit.per_second * LATENCY_ALLOWANCE) - 1)
    return max(1, limit.burst - min(late, limit.burst // 2))


class LeakyBucket:
    """
    A leaky bucket of ``burst`` units draining at ``per_second``, as the portal keeps one per portal.

    :meth:`reserve` books one unit and returns how long the caller must wait before sending, so that the
    portal's counter, which is checked before each request, never goes above ``burst``, even when requests
    reach the portal a little late: the client fills :func:`usable_burst` units of it.
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
            self._capacity = float(usable_burst(limit))
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

    def headroom(self) -> int:
        """How many requests may go right now without waiting."""
        with self._lock:
            self._drain(self._clock())
            return max(0, int(self._capacity - self._level))

    def note_rejected(self) -> None:
        """The portal said the bucket is full (503): see :mod:`.retry`, the home of the back-off."""
        with self._lock:
            self._drain(self._clock())
            self._level = level_after_rejection(self._level, self._capacity)


@dataclass
class _MethodUsage:
    operating: float = 0.0
    reset_at: float | None = None


class OperatingTracker:
    """
    Per-method record of the portal's accumulated operating time, and of blocked methods, for one credential.

    A block is *announced* when the portal's own answers gave its end (an operating time over the limit with its
    ``operating_reset_at``), or *assumed* (a refusal without a time block, or another process's report): an
    announced end replaces an assumed one, even an earlier one.
    """

    def __init__(self, limit: float = OPERATING_LIMIT, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._usage: dict[str, _MethodUsage] = {}
        self._blocked: dict[str, tuple[float, bool]] = {}

    def _sane_reset(self, value: Any) -> float | None:
        """A reset time as reported, unless it lies further ahead than the portal's window (a broken answer)."""
        reset_at = as_seconds(value)
        if reset_at is None or reset_at > self._clock() + OPERATING_WINDOW + 60.0:
            return None
        return reset_at

    def _set_block(self, key: str, until: float, announced: bool) -> None:
        current = self._blocked.get(key)
        if current is None or (announced and not current[1]) or (announced == current[1] and until > current[0]):
            self._blocked[key] = (until, announced)

    def record(self, method: str, time_block: Mapping[str, Any] | None) -> float | None:
        """
        Store the ``time`` block of a successful answer; return the method's operating seconds.

        The call that crosses the limit completes normally and the next one is refused, so a reported operating
        time over the limit blocks the method until the reported reset.
        """
        if not isinstance(time_block, Mapping) or "operating" not in time_block:
            return None
        operating = as_seconds(time_block.get("operating"))
        if operating is None:
            return None
        reset_at = self._sane_reset(time_block.get("operating_reset_at"))
        key = method.lower()
        with self._lock:
            self._usage[key] = _MethodUsage(operating=operating, reset_at=reset_at)
            if operating > self.limit and reset_at is not None:
                self._set_block(key, reset_at, announced=True)
        return operating

    def block(self, method: str, until: float) -> None:
        """Assume that ``method`` is refused until ``until`` (Unix time)."""
        with self._lock:
            self._set_block(method.lower(), until, announced=False)

    def unblocks_at(self, method: str) -> float | None:
        """When a blocked method will be callable again, as far as the portal's answers said; never a guess."""
        key = method.lower()
        now = self._clock()
        with self._lock:
            blocked = self._blocked.get(key)
            if blocked is not None and blocked[1] and blocked[0] > now:
                return blocked[0]
            usage = self._usage.get(key)
            if usage is None or usage.reset_at is None or usage.reset_at <= now:
                return None
            return usage.reset_at

    def blocked_until(self, method: str) -> float | None:
        """Unix time until which ``method`` is known or assumed to be refused, or ``None`` when it is not."""
        key = method.lower()
        with self._lock:
            blocked = self._blocked.get(key)
            if blocked is None:
                return None
            if blocked[0] <= self._clock():
                del self._blocked[key]
                return None
            return blocked[0]

    def last_reported(self, method: str) -> tuple[float, float | None] | None:
        """The last ``(operating, operating_reset_at)`` the portal reported for ``method``, if any."""
        with self._lock:
            usage = self._usage.get(method.lower())
            return (usage.operating, usage.reset_at) if usage is not None else None

    def operating(self, method: str) -> float:
        """The last operating seconds the portal reported for ``method`` (0 when unknown or reset since)."""
        with self._lock:
            usage = self._usage.get(method.lower())
            if usage is None or (usage.reset_at is not None and usage.reset_at <= self._clock()):
                return 0.0
            return usage.operating


class ProcessingBudget:
    """
    This process's pace of spending the portal's operating-time limit of one method (480 s of execution per 10
    minutes, per credential).

    Concurrency spends that budget faster than one request at a time; once it is spent the portal refuses the
    method for up to 10 minutes. A bucket of execution seconds keeps to ``share`` of the limit over time: it holds
    ``share * limit`` seconds and refills at ``share * limit / window`` per second, so a burst of work goes at once
    and sustained work slows down to a pace the portal keeps accepting, instead of being refused for minutes. The
    cost of a command is learnt from the portal's answers (the ``processing`` of their ``time`` blocks).
    """

    def __init__(
        self,
        limit: float = OPERATING_LIMIT,
        window: float = OPERATING_WINDOW,
        share: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = share * limit
        self._rate = share * limit / window
        self._clock = clock
        self._lock = threading.Lock()
        self._level = 0.0
        self._stamp = clock()
        #: Execution seconds of one command, as the portal reports them (0 until an answer said).
        self.per_command = 0.0

    def reserve(self, commands: int) -> tuple[float, float]:
        """Book the expected cost of ``commands`` commands; return ``(booked seconds, seconds to wait first)``."""
        with self._lock:
            now = self._clock()
            self._level = max(0.0, self._level - (now - self._stamp) * self._rate)
            self._stamp = now
            cost = commands * self.per_command
            self._level += cost
            excess = self._level - self._capacity
            return cost, (excess / self._rate if excess > 0 else 0.0)

    def settle(self, booked: float, spent: float, commands: int) -> None:
        """Correct a booking with what the portal reported, and learn the cost of one command."""
        with self._lock:
            self._level = max(0.0, self._level + spent - booked)
            if commands > 0 and spent > 0:
                observed = spent / commands
                self.per_command = observed if self.per_command == 0 else 0.7 * self.per_command + 0.3 * observed


class LocalLimiter:
    """
    The :class:`Limiter` of one process: the portal's bucket and the credential's operating state in memory.

    :param bucket: The portal's bucket (shared by every client of the portal in the process).
    :param tracker: The credential's operating state (shared likewise).
    """

    def __init__(self, bucket: LeakyBucket, tracker: OperatingTracker) -> None:
        self.bucket = bucket
        self.tracker = tracker

    def __repr__(self) -> str:
        return f"LocalLimiter({self.bucket.limit!r})"

    def acquire(self, method: str, force: bool = False) -> Grant:
        """Book a slot, unless ``method`` is blocked (``force``: the caller already waited the block out)."""
        until = None if force else self.tracker.blocked_until(method)
        if until is not None:
            return Grant(0.0, until)
        return Grant(self.bucket.reserve())

    async def aacquire(self, method: str, force: bool = False) -> Grant:
        return self.acquire(method, force)

    def headroom(self) -> int:
        return self.bucket.headroom()

    async def aheadroom(self) -> int:
        return self.headroom()

    def report_rejected(self) -> None:
        self.bucket.note_rejected()

    async def areport_rejected(self) -> None:
        self.report_rejected()

    def report_blocked(self, method: str, until: float) -> None:
        self.tracker.block(method, until)

    async def areport_blocked(self, method: str, until: float) -> None:
        self.report_blocked(method, until)

    def observe(self, method: str, time_block: Mapping[str, Any] | None) -> float | None:
        return self.tracker.record(method, time_block)

    def blocked_until(self, method: str) -> float | None:
        return self.tracker.blocked_until(method)

    def unblocks_at(self, method: str) -> float | None:
        return self.tracker.unblocks_at(method)

    def operating(self, method: str) -> float:
        return self.tracker.operating(method)

    @contextlib.contextmanager
    def refresh_lock(self, name: str) -> Iterator[None]:
        # Threads of this process are serialised by the OAuth session itself; nothing is shared beyond it.
        yield

    @contextlib.asynccontextmanager
    async def arefresh_lock(self, name: str) -> AsyncIterator[None]:
        yield


def credential_key(config: PortalConfig) -> str:
    """
    Who the portal bills operating time to: the webhook (its user and a digest of its code) or the application.

    Never the secret itself: the key may be written to Redis.
    """
    auth = config.auth
    if isinstance(auth, WebhookAuth):
        digest = hashlib.sha256(auth.code.encode()).hexdigest()[:16]
        return f"{config.portal_key}/webhook/{auth.user_id}/{digest}"
    assert isinstance(auth, OAuthCredentials)
    return f"{config.portal_key}/app/{auth.client_id}"


_buckets: dict[str, LeakyBucket] = {}
_trackers: dict[str, OperatingTracker] = {}
_budgets: dict[tuple[str, str], ProcessingBudget] = {}
_registry_lock = threading.Lock()


def shared_bucket(portal_key: str, limit: RateLimit) -> LeakyBucket:
    """Return the process-wide bucket of a portal, creating it or updating its limits."""
    with _registry_lock:
        bucket = _buckets.get(portal_key)
        if bucket is None:
            bucket = _buckets[portal_key] = LeakyBucket(limit)
        elif bucket.limit != limit:
            bucket.configure(limit)
        return bucket


def shared_tracker(key: str) -> OperatingTracker:
    """Return the process-wide operating state of a credential."""
    with _registry_lock:
        tracker = _trackers.get(key)
        if tracker is None:
            tracker = _trackers[key] = OperatingTracker()
        return tracker


def shared_budget(config: PortalConfig, method: str) -> ProcessingBudget:
    """Return the process-wide operating-time budget of a credential's method."""
    key = (credential_key(config), method.lower())
    with _registry_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = ProcessingBudget()
        return budget


def local_limiter(config: PortalConfig) -> LocalLimiter:
    """The per-process limiter of a portal and credential."""
    return LocalLimiter(shared_bucket(config.portal_key, config.rate_limit), shared_tracker(credential_key(config)))


def forget_limits() -> None:
    """Drop every bucket and operating record of this process (tests)."""
    with _registry_lock:
        _buckets.clear()
        _trackers.clear()
        _budgets.clear()
