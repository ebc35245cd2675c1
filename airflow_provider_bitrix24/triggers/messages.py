"""
Event-driven DAG runs: new open-line messages fire asset events, with no task waiting in a slot.

:class:`Bitrix24MessageTrigger` reads the messenger's per-user event queue (``im.v2.Event.get``) of the user the
connection acts as, and fires for the open-line messages its filters accept. Use it in an ``AssetWatcher``
(Airflow 3), directly or through ``MessageQueueTrigger(scheme="bitrix24", ...)``.

How many readers, and what survives a crash:

* **Airflow 3.3 and later**: every watcher of one connection joins one *shared stream* of the triggerer, in *ack
  mode*: one ``im.v2.Event.get`` per poll interval whatever the number of watchers, and the portal's offset moves
  on only after Airflow stored the asset events of a batch. A triggerer killed at any moment loses nothing; the
  batch of the last unconfirmed poll is handed out again (at-least-once: de-duplicate by message ``id``).
* **Airflow 3.0 to 3.2**: :meth:`Bitrix24MessageTrigger.run` shares one reader per connection and triggerer event
  loop; a batch is confirmed once every watcher of that loop handed its events to the triggerer, before Airflow
  stored them, so a triggerer killed in that moment can lose that batch.
* **Airflow 2**: the class imports (so a DAG file shared between versions parses) but Airflow 2 has no asset
  watchers: wait for messages with ``SessionHistorySensor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from airflow.triggers.base import TriggerEvent

from airflow_provider_bitrix24.message_events import (
    MESSAGE_ADD,
    Batch,
    EventReader,
    MessageEventsError,
    MessageFilter,
)

try:  # Airflow 3
    from airflow.triggers.base import BaseEventTrigger
except ImportError:  # Airflow 2: no event-driven scheduling; the class still imports
    from airflow.triggers.base import BaseTrigger as BaseEventTrigger  # type: ignore[assignment]

try:  # Airflow 3.3: shared streams with a producer-side ack channel
    from airflow.triggers.shared_stream import SharedStreamProducer

    SHARED_STREAMS: Final = True
except ImportError:  # Airflow 3.0-3.2, 2.x
    SharedStreamProducer = object  # type: ignore[assignment,misc]
    SHARED_STREAMS: Final = False  # type: ignore[misc]

if TYPE_CHECKING:
    from airflow.triggers.shared_stream import AdvanceItem

    from airflow_provider_bitrix24.client.aio import AsyncBitrix24Client

log = logging.getLogger(__name__)

CLASSPATH: Final = "airflow_provider_bitrix24.triggers.messages.Bitrix24MessageTrigger"
#: Seconds between two polls of an empty queue.
DEFAULT_POLL_INTERVAL: Final = 10.0
STREAM: Final = "bitrix24.im.v2.Event"
#: Seconds a new shared stream waits before its first poll, so that the watchers a triggerer starts together
#: (after a restart, all of them) have joined before the first batch is handed out: a watcher that joins later
#: does not receive batches handed out before it joined. ``[triggerer] shared_stream_cohort_grace_period`` adds
#: to it.
STARTUP_GRACE: Final = 2.0


def _client_factory(conn_id: str) -> Any:
    async def build() -> AsyncBitrix24Client:
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        return await Bitrix24Hook(bitrix24_conn_id=conn_id).get_async_client()

    return build


def raw_batch(batch: Batch) -> dict[str, Any]:
    """What one poll hands to every watcher of the connection."""
    return {"events": batch.events, "next_offset": batch.next_offset}


class Bitrix24MessageTrigger(BaseEventTrigger):
    """
    Fire for new (or edited, deleted) messages of open-line chats, read from the connection user's event queue.

    The connection's user must be a **member** of the chats to watch (the portal queues events for members only),
    and no other application may read that user's queue (each user has one; readers take events from each other).

    By default each poll that found matching messages fires **one** event whose payload lists them::

        {"messages": [{"id": ..., "chat_id": ..., "session_id": ..., "author_id": ..., "author_type": "client",
                       "date": ..., "text": ..., "event_id": ..., "line_id": ..., "event_type": ...}, ...]}

    Airflow before 3.4 starts a run with the asset events stored up to the first event of a burst and leaves
    later ones of the same burst until the next event arrives (apache/airflow#56050); one event per poll keeps a
    burst together. ``one_event_per_message=True`` fires one event per message instead, whose payload is the
    record itself (what ``SaveQuickAnswerOperator`` takes as ``message_id``).

    :param bitrix24_conn_id: The Bitrix24 connection (its user reads the queue; scope ``im``).
    :param chat_ids: Only these chats (``None``: every open-line chat the user is a member of).
    :param line_ids: Only these open lines (``None``: every line).
    :param authors: Author types that count: ``client`` (default), ``operator``, ``bot``, ``system`` or ``any``.
    :param text_pattern: A regular expression in RE2 syntax searched in the text (as ``SessionHistorySensor``).
    :param event_types: ``ONIMV2MESSAGEADD`` (default), ``ONIMV2MESSAGEUPDATE``, ``ONIMV2MESSAGEDELETE``.
    :param poll_interval: Seconds between two polls of an empty queue. Watchers of one connection share one
        reader, which polls at the interval of the watcher that started it.
    :param one_event_per_message: Fire one event per message instead of one per poll.
    """

    def __init__(
        self,
        *,
        bitrix24_conn_id: str,
        chat_ids: Sequence[int] | None = None,
        line_ids: Sequence[int] | None = None,
        authors: str | Sequence[str] = ("client",),
        text_pattern: str | None = None,
        event_types: str | Sequence[str] = (MESSAGE_ADD,),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        one_event_per_message: bool = False,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is untyped
        if not isinstance(bitrix24_conn_id, str) or not bitrix24_conn_id:
            raise ValueError("bitrix24_conn_id: give the id of a Bitrix24 connection")
        if text_pattern is not None and not isinstance(text_pattern, str):
            raise ValueError(f"text_pattern: {text_pattern!r} is not a string")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float) or not poll_interval > 0:
            raise ValueError(f"poll_interval: {poll_interval!r} is not a positive number of seconds")
        self.bitrix24_conn_id = bitrix24_conn_id
        self.chat_ids = None if chat_ids is None else _list(chat_ids)
        self.line_ids = None if line_ids is None else _list(line_ids)
        self.authors = [authors] if isinstance(authors, str) else list(authors)
        self.text_pattern = text_pattern or None
        self.event_types = [event_types] if isinstance(event_types, str) else list(event_types)
        self.poll_interval = float(poll_interval)
        self.one_event_per_message = bool(one_event_per_message)
        # Validate ids, authors and event types now (the DAG fails to parse with the argument named); the pattern
        # is compiled with RE2 when the trigger runs.
        MessageFilter.build(
            chat_ids=self.chat_ids, line_ids=self.line_ids, authors=self.authors, event_types=self.event_types
        )
        self._filter: MessageFilter | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "bitrix24_conn_id": self.bitrix24_conn_id,
                "chat_ids": self.chat_ids,
                "line_ids": self.line_ids,
                "authors": list(self.authors),
                "text_pattern": self.text_pattern,
                "event_types": list(self.event_types),
                "poll_interval": self.poll_interval,
                "one_event_per_message": self.one_event_per_message,
            },
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bitrix24_conn_id={self.bitrix24_conn_id!r})"

    @property
    def filter(self) -> MessageFilter:
        if self._filter is None:
            self._filter = MessageFilter.build(
                chat_ids=self.chat_ids,
                line_ids=self.line_ids,
                authors=self.authors,
                text_pattern=self.text_pattern,
                event_types=self.event_types,
            )
        return self._filter

    def events_for(self, events: Iterable[Any]) -> list[TriggerEvent]:
        """The trigger events for one batch of queued events (none when nothing matches)."""
        records = self.filter.match(events)
        if not records:
            return []
        if self.one_event_per_message:
            return [TriggerEvent(record) for record in records]
        return [TriggerEvent({"messages": records})]

    # -- Airflow 3.3: one reader per connection, in ack mode ----------------------------------------------------

    def shared_stream_key(self) -> Hashable | None:
        # The queue is one per user: every watcher of the connection must share one reader.
        return (STREAM, self.bitrix24_conn_id) if SHARED_STREAMS else None

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> Bitrix24EventProducer:
        return Bitrix24EventProducer(
            str(kwargs["bitrix24_conn_id"]), float(kwargs.get("poll_interval") or DEFAULT_POLL_INTERVAL)
        )

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        self.log.info("Watching Bitrix24 messages: %s", self.filter.describe())
        async for raw in shared_stream:
            for event in self.events_for(raw.get("events", []) if isinstance(raw, dict) else []):
                yield event

    # -- Airflow 3.0-3.2 (and direct use): one reader per connection and event loop -----------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info("Watching Bitrix24 messages: %s", self.filter.describe())
        hub = _hub_for(self.bitrix24_conn_id, self.poll_interval)
        async for raw in hub.subscribe():
            for event in self.events_for(raw["events"]):
                yield event


def _list(value: Any) -> list[Any]:
    return [value] if isinstance(value, int | str) else list(value)


class Bitrix24EventProducer(SharedStreamProducer):
    """
    The broker side of a connection's shared stream (Airflow 3.3 ack mode).

    Yields one raw event per poll that found events (its broker payload is the offset that confirms them), then
    waits until Airflow resolved it: :meth:`advance` is called once every watcher moved past the batch and the
    asset events derived from it are stored. Only then does the next poll send that offset, which deletes the
    batch on the portal. A batch not resolved cleanly (a watcher failed, or the ack timed out) terminates the
    stream; the next reader starts from the portal's unconfirmed events.
    """

    def __init__(self, conn_id: str, poll_interval: float, *, reader: EventReader | None = None) -> None:
        self.conn_id = conn_id
        self.poll_interval = poll_interval
        self.reader = reader or EventReader(conn_id, _client_factory(conn_id), poll_interval=poll_interval)
        self._pending: Batch | None = None
        self._resolved = asyncio.Event()

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        await asyncio.sleep(min(STARTUP_GRACE, self.poll_interval))
        while True:
            batch = await self.reader.poll()
            if not batch.events:
                self.reader.confirm(batch)
                await asyncio.sleep(self.poll_interval)
                continue
            self._pending, self._resolved = batch, asyncio.Event()
            yield raw_batch(batch), batch.next_offset
            await self._resolved.wait()
            if not batch.has_more:
                await asyncio.sleep(self.poll_interval)

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        unclean = [item for item in batch if not item.outcome.is_clean]
        if unclean:
            raise MessageEventsError(
                f"Bitrix24 message events of {self.conn_id!r}: a batch was not stored by every watcher "
                f"({unclean[0].outcome}); it stays unconfirmed on the portal and is read again"
            )
        pending = self._pending
        if pending is not None and max(item.broker_payload for item in batch) >= pending.next_offset:
            self.reader.confirm(pending)
            self._pending = None
            self._resolved.set()

    async def aclose(self) -> None:
        await self.reader.aclose()


class _Hub:
    """One reader per connection and event loop for :meth:`Bitrix24MessageTrigger.run` (Airflow 3.0-3.2)."""

    def __init__(self, key: tuple[Any, str], reader: EventReader) -> None:
        self.key = key
        self.reader = reader
        self.queues: dict[int, asyncio.Queue[Any]] = {}
        self.waiting: set[int] = set()
        self.resolved = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._ids = 0

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        self._ids += 1
        sid = self._ids
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.queues[sid] = queue
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._loop(), name=f"bitrix24-message-events-{self.reader.conn_id}")
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                self._done(sid)  # the watcher handed its events to the triggerer and came back
        finally:
            self.queues.pop(sid, None)
            self._done(sid)
            if not self.queues:
                await self._stop()

    def _done(self, sid: int) -> None:
        self.waiting.discard(sid)
        if not self.waiting:
            self.resolved.set()

    async def _stop(self) -> None:
        _hubs.pop(self.key, None)
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.reader.aclose()

    async def _loop(self) -> None:
        try:
            while self.queues:
                batch = await self.reader.poll()
                if not batch.events:
                    self.reader.confirm(batch)
                    await asyncio.sleep(self.reader.poll_interval)
                    continue
                self.waiting, self.resolved = set(self.queues), asyncio.Event()
                for queue in self.queues.values():
                    queue.put_nowait(raw_batch(batch))
                await self.resolved.wait()
                self.reader.confirm(batch)
                if not batch.has_more:
                    await asyncio.sleep(self.reader.poll_interval)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            _hubs.pop(self.key, None)
            for queue in self.queues.values():
                queue.put_nowait(exc)


_hubs: dict[tuple[Any, str], _Hub] = {}


def _hub_for(conn_id: str, poll_interval: float) -> _Hub:
    key = (asyncio.get_running_loop(), conn_id)
    hub = _hubs.get(key)
    if hub is None:
        reader = EventReader(conn_id, _client_factory(conn_id), poll_interval=poll_interval)
        hub = _hubs[key] = _Hub(key, reader)
    return hub
