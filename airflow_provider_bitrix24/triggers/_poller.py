"""
One poller per portal connection and event loop, shared by every session-history wait running in that loop.

Each waiting trigger subscribes with its target (a session or a chat), its filter and its poll interval. The
poller repeatedly takes the subscriptions that are due, oldest due first, merges those with the same target into
one command, and sends up to 50 commands per ``batch`` request. The client's leaky bucket paces the requests to
the portal's rate limit, so N waits cost about N/50 requests per round; when they ask for more than the limit
allows, every round takes longer, for every wait alike, instead of drawing ``QUERY_LIMIT_EXCEEDED``.

Outcomes, per subscription:

* enough matching messages: the wait resolves with them;
* a permanent error of its command (``ACCESS_DENIED``, ``INVALID_SESSION_ID``...): the wait resolves with it;
* an answer of its command that cannot be read (an id like ``"²"``, a text that is not text): the wait resolves
  with an ``INVALID_RESPONSE`` error, the other waits of the batch carry on;
* a whole answer that cannot be read (larger than the client accepts, nested too deep): its targets are polled
  again in halves, down to one per request, and only the waits whose own answer cannot be read resolve with the
  error;
* a permanent error of the whole request (bad credential, missing scope): every wait of the poller resolves with
  it, since they share the credential;
* anything transient: logged, and polled again after its interval.

The poller stops, and closes its client, when its last subscription leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_bitrix24.client.pipeline import AdaptiveWindow
from airflow_provider_bitrix24.client.wire import BATCH_LIMIT, split_batches
from airflow_provider_bitrix24.history import (
    MATCH_SECONDS,
    METHOD,
    HistoryFilter,
    HistoryMatcher,
    unreadable_answer,
)

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.aio import AsyncBitrix24Client
    from airflow_provider_bitrix24.client.errors import Bitrix24Error
    from airflow_provider_bitrix24.client.wire import BatchItem

#: Commands per ``batch`` request (the portal's maximum).
BATCH_SIZE: Final = BATCH_LIMIT
#: Most batch requests a poller keeps in flight; within it, an adaptive window follows the portal's speed, and
#: the client's bucket decides when each request goes.
MAX_IN_FLIGHT: Final = 32
#: A batch with room left also takes waits due within this share of their interval, so that waits which fell
#: out of step (different start times, pacing) are merged into full batches instead of many small ones.
EARLY_SHARE: Final = 0.25

log = logging.getLogger(__name__)

#: ``("SESSION_ID", 321)`` or ``("CHAT_ID", 1763)``: what one history call asks for.
Target = tuple[str, int]
ClientFactory = Callable[[], Awaitable["AsyncBitrix24Client"]]


@dataclass(eq=False)
class Subscription:
    """One waiting trigger: what it polls, how often, and the future its result goes to."""

    target: Target
    filter: HistoryFilter
    interval: float
    future: asyncio.Future[list[dict[str, Any]]]
    due: float
    seq: int
    polls: int = 0
    #: What the wait has read so far, made on its first answer.
    matcher: HistoryMatcher | None = None

    @property
    def active(self) -> bool:
        return not self.future.done()


@dataclass
class PollerStats:
    """Counters of one poller, for logs and measurements."""

    requests: int = 0
    commands: int = 0
    deduplicated: int = 0
    transient_errors: int = 0


class SessionPoller:
    """
    Poll many sessions' histories for many waits through shared ``batch`` requests.

    Use :func:`get_poller` to get the shared instance of a connection, then ``await poller.wait(...)``.

    :param key: The connection id the poller serves.
    :param client_factory: Creates the async client on first use.
    """

    def __init__(self, key: str, client_factory: ClientFactory) -> None:
        self.key = key
        self._client_factory = client_factory
        self._loop = asyncio.get_running_loop()
        self._subscriptions: set[Subscription] = set()
        self._wakeup = asyncio.Event()
        self._window = AdaptiveWindow(MAX_IN_FLIGHT, initial=4)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._client: AsyncBitrix24Client | None = None
        self.stats = PollerStats()

    def __repr__(self) -> str:
        return f"SessionPoller({self.key!r}, subscriptions={len(self._subscriptions)})"

    @property
    def subscriptions(self) -> int:
        return len(self._subscriptions)

    async def wait(self, target: Target, history_filter: HistoryFilter, interval: float) -> list[dict[str, Any]]:
        """
        Wait until ``target``'s history holds enough messages accepted by ``history_filter``; return them.

        :raises Bitrix24Error: a permanent error of the target or of the credential.
        """
        future: asyncio.Future[list[dict[str, Any]]] = self._loop.create_future()
        subscription = Subscription(
            target, history_filter, max(0.0, float(interval)), future, self._loop.time(), next(self._seq)
        )
        self._subscriptions.add(subscription)
        self._wakeup.set()
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name=f"bitrix24-session-poller-{self.key}")
        try:
            return await future
        finally:
            self._unsubscribe(subscription)

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        if not subscription.future.done():
            subscription.future.cancel()
        if not self._subscriptions:
            self._stop()

    def _stop(self) -> None:
        self._deregister()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _deregister(self) -> None:
        if _pollers.get((self._loop, self.key)) is self:
            del _pollers[(self._loop, self.key)]

    # -- the loop

    async def _run(self) -> None:
        try:
            try:
                self._client = await self._client_factory()
            except Exception as exc:
                self._fail_all(exc)
                return
            while self._subscriptions:
                blocked = self._client.time_until_unblocked(METHOD)
                if blocked is not None:
                    # The method is refused until then: polling now would only spend requests on refusals.
                    await self._sleep(blocked)
                    continue
                if len(self._in_flight) >= self._window.size:
                    await self._sleep(None)
                    continue
                chunk = self._take_due()
                if chunk:
                    task = self._loop.create_task(self._poll(chunk))
                    self._in_flight.add(task)
                    task.add_done_callback(self._poll_done)
                    continue
                await self._sleep_until_due()
        finally:
            self._deregister()
            for task in list(self._in_flight):
                task.cancel()
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)
            if self._client is not None:
                with contextlib.suppress(Exception):
                    await self._client.aclose()
                self._client = None

    def _poll_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wakeup.set()
        if not task.cancelled() and task.exception() is not None:
            # A bug, not a portal answer: end every wait of the poller with it rather than poll forever.
            self._fail_all(task.exception())

    def _take_due(self) -> dict[Target, list[Subscription]]:
        """
        Up to 50 distinct targets for one request: the due ones, oldest due first, then, if there is room, the
        ones due soon. Every taken target carries all the subscriptions on it that were taken.
        """
        now = self._loop.time()
        active = [s for s in self._subscriptions if s.active]
        due = sorted((s for s in active if s.due <= now), key=lambda s: (s.due, s.seq))
        if not due:
            return {}
        soon = sorted(
            (s for s in active if now < s.due <= now + s.interval * EARLY_SHARE), key=lambda s: (s.due, s.seq)
        )
        chunk: dict[Target, list[Subscription]] = {}
        for subscription in due + soon:
            if subscription.target in chunk:
                chunk[subscription.target].append(subscription)
                self.stats.deduplicated += 1
            elif len(chunk) < BATCH_SIZE:
                chunk[subscription.target] = [subscription]
            else:
                continue
            subscription.due = math.inf  # in flight
        return chunk

    async def _sleep_until_due(self) -> None:
        pending = [s.due for s in self._subscriptions if s.active]
        timeout = max(0.0, min(pending) - self._loop.time()) if pending else None
        if timeout == math.inf:
            timeout = None  # everything is in flight; a finished request wakes us up
        await self._sleep(timeout)

    async def _sleep(self, timeout: float | None) -> None:
        """Wait ``timeout`` seconds (``None``: until woken), or less when a wait arrives or a request ends."""
        self._wakeup.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), None if timeout is None else max(0.0, timeout))

    async def _poll(self, chunk: dict[Target, list[Subscription]]) -> None:
        from airflow_provider_bitrix24.client.errors import Bitrix24BatchError, Bitrix24Error, Bitrix24ResponseError

        assert self._client is not None
        commands = {f"{field[0].lower()}{value}": (METHOD, {field: value}) for field, value in chunk}
        targets = dict(zip(commands, chunk, strict=True))
        self.stats.requests += 1
        self.stats.commands += len(commands)
        started = time.monotonic()
        try:
            items = await self._client.batch(commands)
        except Bitrix24Error as err:
            if isinstance(err, Bitrix24BatchError):
                err = err.cause  # a read-only poll: which commands ran does not matter
            if err.retryable:
                self._window.on_overload(time.monotonic() - started)
                self.stats.transient_errors += 1
                log.warning(
                    "Bitrix24 history poll of %d session(s) failed with %s; polling again later", len(chunk), err
                )
                self._reschedule(s for group in chunk.values() for s in group)
                return
            if isinstance(err, Bitrix24ResponseError):
                # The answer could not be read (too large, nested too deep): it concerns some targets, not the
                # credential. Poll the targets apart, and end only the waits whose own answer cannot be read.
                await self._split(chunk, err)
                return
            log.error("Bitrix24 history poll failed with %s; ending every wait of connection %s", err, self.key)
            self._fail_all(err)
            return
        self._window.on_answer(time.monotonic() - started, len(commands))
        transient: list[str] = []
        for item in items:
            for subscription in chunk[targets[item.key]]:
                self._deliver(subscription, item, transient)
                # Each wait reads its answer within a time bound; the loop gets a turn between two of them, so
                # that a batch of 50 slow patterns does not hold it for 50 bounds in a row.
                await asyncio.sleep(0)
        if transient:
            self.stats.transient_errors += len(transient)
            log.warning(
                "Bitrix24 history of %d target(s) not read this round (%s); polling them again later",
                len(transient),
                ", ".join(transient[:5]),
            )

    async def _split(self, chunk: dict[Target, list[Subscription]], err: Bitrix24Error) -> None:
        """
        The answer for ``chunk`` could not be read: poll its targets in halves, down to one target per request, so
        that only the waits whose own answer cannot be read end (with ``err``); the others carry on.
        """
        if len(chunk) == 1:
            ((target, group),) = chunk.items()
            log.warning("Bitrix24 history poll: %s; ending the waits on %s=%s", err, *target)
            for subscription in group:
                if subscription.active:
                    subscription.polls += 1
                    subscription.future.set_exception(err)
            return
        log.warning(
            "Bitrix24 history poll of %d target(s) could not be read (%s); polling them in smaller requests",
            len(chunk),
            err,
        )
        targets = list(chunk.items())
        for part in split_batches(targets, len(targets) - len(targets) // 2):
            await self._poll(dict(part))

    def _deliver(self, subscription: Subscription, item: BatchItem, transient: list[str]) -> None:
        if not subscription.active:
            return
        subscription.polls += 1
        if item.error is not None:
            if item.error.retryable:
                transient.append(f"{item.key}: {item.error.code}")
                self._reschedule([subscription])
            else:
                subscription.future.set_exception(item.error)
            return
        if subscription.matcher is None:
            subscription.matcher = HistoryMatcher(subscription.filter)
        try:
            # Only the messages this wait has not read yet, and for a bounded time: the loop is shared.
            matches = subscription.matcher.feed(item.result, deadline=time.perf_counter() + MATCH_SECONDS)
        except Exception as exc:
            # An answer that cannot be read ends this wait alone; the others of the batch carry on.
            field, value = subscription.target
            err = unreadable_answer(exc, f"{field}={value}")
            log.warning("Bitrix24 history poll: %s; ending the wait on %s=%s", err, field, value)
            subscription.future.set_exception(err)
            return
        if subscription.filter.is_met(matches):
            subscription.future.set_result(matches)
        else:
            # An answer the time bound cut short is read on at the next round, not a whole interval later.
            self._reschedule([subscription], at_once=subscription.matcher.backlog > 0)

    def _reschedule(self, subscriptions: Any, at_once: bool = False) -> None:
        now = self._loop.time()
        blocked = self._client.time_until_unblocked(METHOD) if self._client is not None else None
        not_before = now + blocked if blocked is not None else now
        for subscription in subscriptions:
            subscription.due = max(now + (0.0 if at_once else subscription.interval), not_before)

    def _fail_all(self, exc: BaseException | None) -> None:
        for subscription in list(self._subscriptions):
            if subscription.active and exc is not None:
                subscription.future.set_exception(exc)


_pollers: dict[tuple[asyncio.AbstractEventLoop, str], SessionPoller] = {}


def get_poller(key: str, client_factory: ClientFactory) -> SessionPoller:
    """The poller of connection ``key`` in the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    poller = _pollers.get((loop, key))
    if poller is None:
        poller = _pollers[(loop, key)] = SessionPoller(key, client_factory)
    return poller
