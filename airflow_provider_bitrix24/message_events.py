"""
Read the messenger's per-user event queue (``im.v2.Event.*``) and turn open-line messages into records.

Plain Python (no Airflow import), shared by :class:`~airflow_provider_bitrix24.triggers.messages.Bitrix24MessageTrigger`
on every Airflow version.

The queue (documented in ``api-reference/chat-bots/chat-bots-v2/im.v2/events/``) belongs to the user the connection
acts as, holds the new, edited and deleted messages of the chats **that user is a member of**, and keeps events
about 24 hours. ``im.v2.Event.get(offset, limit)`` confirms (deletes) every event below ``offset`` and answers the
events from it, ascending, with ``nextOffset`` and ``hasMore``. So the confirmation of a batch travels with the
*next* call: :class:`EventReader` sends ``nextOffset`` only once the caller said the batch is safe
(:meth:`EventReader.confirm`), and a reader that starts afresh (offset 0) is handed everything not confirmed yet.
One reader per user: a second one confirms events the first has not seen.

Each message becomes a record with the keys of the session-history sensor's records plus three::

    {"id": 5012, "chat_id": 1763, "session_id": 335, "author_id": 101, "author_type": "client",
     "date": "2026-03-11T13:12:46+03:00", "text": "Where is my order?",
     "event_id": 2001, "line_id": 1, "event_type": "ONIMV2MESSAGEADD"}

What an open-line chat looks like in these events is not documented. The reader takes a chat for an open line
when its ``entityType`` is ``LINES`` (or, without ``entityType``, its ``type`` is ``lines``), the line from
``entityId`` (``connector|line|chat|user``) or else from ``entityData1`` (index 7), and the session from
``entityData1`` (index 5; ``None`` when absent or 0). Anything of another shape is skipped, never an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_bitrix24.history import (
    HistoryArgumentError,
    HistoryFilter,
    classify_author,
    show,
)

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.aio import AsyncBitrix24Client
    from airflow_provider_bitrix24.client.errors import Bitrix24Error

log = logging.getLogger(__name__)

SUBSCRIBE: Final = "im.v2.Event.subscribe"
GET: Final = "im.v2.Event.get"
MESSAGE_ADD: Final = "ONIMV2MESSAGEADD"
MESSAGE_UPDATE: Final = "ONIMV2MESSAGEUPDATE"
MESSAGE_DELETE: Final = "ONIMV2MESSAGEDELETE"
EVENT_TYPES: Final = (MESSAGE_ADD, MESSAGE_UPDATE, MESSAGE_DELETE)
#: How long the portal keeps an unconfirmed event (documented: 24 hours).
RETENTION_SECONDS: Final = 24 * 3600.0
#: Events per ``im.v2.Event.get`` (the portal's maximum).
MAX_LIMIT: Final = 1000
#: Longest pause between two polls after transient errors.
MAX_BACKOFF: Final = 300.0
#: Event ids remembered per reader to drop redeliveries within one process.
SEEN_IDS: Final = 10_000

#: What to do about each permanent error of ``im.v2.Event.*``.
HINTS: Final[dict[str, str]] = {
    "insufficient_scope": "add the 'im' scope to the webhook or application permissions",
    "ERROR_METHOD_NOT_FOUND": (
        "this portal has no im.v2.Event.* (an older Bitrix24 version) or the webhook URL is incomplete; "
        "update the portal, or wait for messages with SessionHistorySensor instead"
    ),
    "NO_AUTH_FOUND": "the webhook code or token is wrong or revoked; update the Airflow connection",
    "INVALID_CREDENTIALS": "the webhook user/code pair is wrong; update the Airflow connection",
    "invalid_token": "the OAuth access token is unknown to the portal; re-authorise the application",
    "expired_token": "the OAuth token stayed expired after a refresh; re-authorise the application",
    "invalid_grant": "the refresh token is no longer valid; re-authorise the application",
    "invalid_client": "the OAuth client_id or client_secret is wrong, or the app is not installed on this portal",
    "ACCESS_DENIED": "the portal's plan has no REST access, or the user may not use the messenger",
    "user_access_error": "an administrator restricted the application to other users",
    "PAYMENT_REQUIRED": "the portal's subscription or the application's paid period is over",
    "PORTAL_DELETED": "the portal is deleted or its public part is closed",
    "INVALID_CONNECTION": "fix the Airflow connection field named above",
}


class MessageEventsError(Exception):
    """A permanent failure of the event queue; the text names the fix."""


def describe(err: Bitrix24Error, conn_id: str) -> str:
    """The error's text plus what to do about it."""
    hint = HINTS.get(err.code)
    text = f"Bitrix24 message events of connection {conn_id!r} cannot be read: {err}"
    return f"{text}. Hint: {hint}." if hint else text


# --------------------------------------------------------------------------- records


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _field(value: Any, index: int) -> int | None:
    if not isinstance(value, str):
        return None
    parts = value.split("|")
    return _int(parts[index]) if len(parts) > index else None


def open_line_of(chat: Any) -> tuple[int | None, int | None] | None:
    """``(line_id, session_id)`` of an open-line chat object, or ``None`` for any other chat."""
    if not isinstance(chat, Mapping):
        return None
    entity_type = chat.get("entityType")
    if isinstance(entity_type, str) and entity_type:
        if entity_type.upper() != "LINES":
            return None
    elif not (isinstance(chat.get("type"), str) and chat["type"].lower() == "lines"):
        return None
    line_id = _field(chat.get("entityId"), 1)
    if line_id is None:
        line_id = _field(chat.get("entityData1"), 7)
    session_id = _field(chat.get("entityData1"), 5) or None
    return line_id, session_id


def to_record(event: Any) -> dict[str, Any] | None:
    """
    The record of one queued event, or ``None`` when it is not a message of an open-line chat (or unreadable).

    ``ONIMV2MESSAGEDELETE`` carries only ``messageId``: its record has an empty ``text``.
    """
    if not isinstance(event, Mapping):
        return None
    kind, data, event_id = event.get("type"), event.get("data"), _int(event.get("eventId"))
    if kind not in EVENT_TYPES or not isinstance(data, Mapping) or event_id is None:
        return None
    where = open_line_of(data.get("chat"))
    if where is None:
        return None
    user = data.get("user") if isinstance(data.get("user"), Mapping) else None
    if kind == MESSAGE_DELETE:
        message: Mapping[str, Any] = {"id": data.get("messageId")}
    else:
        found = data.get("message")
        message = found if isinstance(found, Mapping) else {}
    message_id = _int(message.get("id"))
    if message_id is None or message_id == 0:
        return None
    chat_id = _int(message.get("chatId"))
    if chat_id is None:
        chat_id = _int(data["chat"].get("id"))
    author_id = _int(message.get("authorId"))
    if author_id is None:
        author_id = _int(user.get("id")) if user is not None else 0
    author_id = author_id or 0
    text, date = message.get("text"), message.get("date", event.get("date"))
    return {
        "id": message_id,
        "chat_id": chat_id,
        "session_id": where[1],
        "author_id": author_id,
        "author_type": classify_author(author_id, user),
        "date": date if isinstance(date, str) else str(event.get("date") or ""),
        "text": text if isinstance(text, str) else "",
        "event_id": event_id,
        "line_id": where[0],
        "event_type": kind,
    }


# --------------------------------------------------------------------------- filter


def _ids(value: Any, name: str) -> frozenset[int] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, int | str) else list(value) if isinstance(value, Iterable) else [value]
    ids: set[int] = set()
    for item in items:
        number = _int(item)
        if number is None or number == 0:
            raise HistoryArgumentError(name, f"{show(item)} is not a positive id")
        ids.add(number)
    if not ids:
        raise HistoryArgumentError(name, "is empty; leave it out (None) to take every one")
    return frozenset(ids)


def _event_types(value: Any) -> frozenset[str]:
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, Iterable) else [value]
    kinds: set[str] = set()
    for item in items:
        name = item.strip().upper() if isinstance(item, str) else item
        if name not in EVENT_TYPES:
            raise HistoryArgumentError("event_types", f"{show(item)} is not one of {', '.join(EVENT_TYPES)}")
        kinds.add(name)
    if not kinds:
        raise HistoryArgumentError("event_types", f"is empty; use some of {', '.join(EVENT_TYPES)}")
    return frozenset(kinds)


@dataclass(frozen=True)
class MessageFilter:
    """Which message records a watcher fires for. Build it with :meth:`build` (validates, compiles RE2)."""

    chat_ids: frozenset[int] | None
    line_ids: frozenset[int] | None
    event_types: frozenset[str]
    text: HistoryFilter = field(compare=False)

    @classmethod
    def build(
        cls,
        *,
        chat_ids: Any = None,
        line_ids: Any = None,
        authors: str | Iterable[str] = ("client",),
        text_pattern: str | None = None,
        event_types: Any = (MESSAGE_ADD,),
    ) -> MessageFilter:
        """:raises HistoryArgumentError: naming the argument."""
        return cls(
            chat_ids=_ids(chat_ids, "chat_ids"),
            line_ids=_ids(line_ids, "line_ids"),
            event_types=_event_types(event_types),
            text=HistoryFilter.build(author=authors, text_pattern=text_pattern),
        )

    def accepts(self, record: Mapping[str, Any]) -> bool:
        if record["event_type"] not in self.event_types:
            return False
        if self.chat_ids is not None and record["chat_id"] not in self.chat_ids:
            return False
        if self.line_ids is not None and record["line_id"] not in self.line_ids:
            return False
        if record["event_type"] == MESSAGE_DELETE:  # no text: the author and chat decide
            return self.text.wants(record)
        return self.text.accepts(record)

    def match(self, events: Iterable[Any]) -> list[dict[str, Any]]:
        """The records of ``events`` this filter accepts, in queue order."""
        records = (to_record(event) for event in events)
        return [r for r in records if r is not None and self.accepts(r)]

    def describe(self) -> str:
        parts = ["/".join(sorted(self.event_types)), self.text.describe().split(" ", 1)[1]]
        if self.line_ids is not None:
            parts.append(f"lines {sorted(self.line_ids)}")
        if self.chat_ids is not None:
            parts.append(f"chats {sorted(self.chat_ids)}")
        return " ".join(parts)


# --------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class Batch:
    """One answer of ``im.v2.Event.get``: its events and the offset that confirms them."""

    events: list[dict[str, Any]]
    next_offset: int
    has_more: bool


ClientFactory = Callable[[], Awaitable["AsyncBitrix24Client"]]


class EventReader:
    """
    The one reader of a connection's event queue.

    :meth:`poll` answers the next batch: it sends the offset confirmed so far (which deletes what lies below it
    on the portal), retries transient failures with growing pauses while keeping the offset, and raises
    :class:`MessageEventsError` for a permanent one. :meth:`confirm` records that a batch is safe; its offset
    reaches the portal with the next :meth:`poll`.

    :param conn_id: For messages only.
    :param client_factory: Builds the async client (the connection's limiter and Redis budget apply).
    :param poll_interval: Seconds between two polls of an empty queue.
    :param limit: Events per call (1..1000).
    """

    def __init__(
        self,
        conn_id: str,
        client_factory: ClientFactory,
        *,
        poll_interval: float,
        limit: int = MAX_LIMIT,
        retention: float = RETENTION_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn_id = conn_id
        self.client_factory = client_factory
        self.poll_interval = poll_interval
        self.limit = max(1, min(MAX_LIMIT, int(limit)))
        self.retention = retention
        self.clock = clock
        self.offset = 0
        self.requests = 0
        self._client: AsyncBitrix24Client | None = None
        self._last_answer: float | None = None
        self._previous: tuple[int, list[int]] | None = None  # (offset sent, event ids answered)
        self._seen: OrderedDict[int, None] = OrderedDict()

    async def _call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        if self._client is None:
            self._client = await self.client_factory()
            self.requests += 1
            await self._client.call(SUBSCRIBE)
        self.requests += 1
        return await self._client.call(method, params)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def poll(self) -> Batch:
        """The next batch (possibly empty), after as many transient failures as it takes."""
        from airflow_provider_bitrix24.client.errors import Bitrix24Error

        failures = 0
        while True:
            try:
                result = await self._call(GET, {"offset": self.offset, "limit": self.limit})
                return self._read(result)
            except asyncio.CancelledError:
                raise
            except Bitrix24Error as err:
                if not err.retryable:
                    raise MessageEventsError(describe(err, self.conn_id)) from None
                failures += 1
                pause = min(MAX_BACKOFF, self.poll_interval * 2 ** min(failures - 1, 10))
                log.warning(
                    "Bitrix24 message events of %r: transient failure %d (%s); polling again from offset %d in %.0f s",
                    self.conn_id,
                    failures,
                    err,
                    self.offset,
                    pause,
                )
                await asyncio.sleep(pause)

    def _read(self, result: Any) -> Batch:
        if not isinstance(result, Mapping) or not isinstance(result.get("events", []), list):
            raise MessageEventsError(
                f"Bitrix24 message events of connection {self.conn_id!r}: unexpected answer of {GET}: {show(result)}"
            )
        now = self.clock()
        if self._last_answer is not None and now - self._last_answer > self.retention:
            log.warning(
                "Bitrix24 message events of %r: the queue was not read for %.1f h, longer than the portal keeps "
                "events (%.0f h); messages of that time may have expired unseen",
                self.conn_id,
                (now - self._last_answer) / 3600,
                self.retention / 3600,
            )
        self._last_answer = now
        events = [e for e in result.get("events") or [] if isinstance(e, Mapping)]
        ids = [i for i in (_int(e.get("eventId")) for e in events) if i is not None]
        self._check_other_reader(ids)
        fresh = []
        for event, event_id in zip(events, ids, strict=False):
            if event_id in self._seen:
                continue
            fresh.append(dict(event))
        next_offset = _int(result.get("nextOffset"))
        if next_offset is None:  # documented as possibly absent when empty: keep the offset
            next_offset = max([self.offset, *(i + 1 for i in ids)])
        self._previous = (self.offset, ids)
        return Batch(fresh, max(self.offset, next_offset), bool(result.get("hasMore")) and bool(events))

    def _check_other_reader(self, ids: list[int]) -> None:
        """Events answered for this very offset before and gone now, while later ones are there: someone confirmed them."""
        if self._previous is None or self._previous[0] != self.offset or not self._previous[1] or not ids:
            return
        before = self._previous[1]
        if before[0] not in ids and ids[0] > before[0]:
            log.warning(
                "Bitrix24 message events of %r: events this reader was shown (ids from %d) disappeared before it "
                "confirmed them. Another application or deployment seems to read the same user's queue; each user "
                "has ONE queue, and readers take events away from each other. Use a separate user (webhook) per "
                "reader.",
                self.conn_id,
                before[0],
            )

    def confirm(self, batch: Batch) -> None:
        """The batch is safe: its confirmation goes with the next poll; its event ids are not handed out again."""
        self.offset = max(self.offset, batch.next_offset)
        for event in batch.events:
            event_id = _int(event.get("eventId"))
            if event_id is not None:
                self._seen[event_id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)


# --------------------------------------------------------------------------- in the DAG


def messages_of(events: Iterable[Any]) -> list[dict[str, Any]]:
    """
    The message records of a run's asset events, each once, ascending by id.

    Takes what a DAG gets: the asset events of ``triggering_asset_events`` (anything with an ``extra`` holding the
    trigger's ``payload``), or the payloads themselves. A payload is one poll (``{"messages": [...]}``) or one
    message (``one_event_per_message=True``). Delivery is at-least-once: a message handed out twice (a triggerer
    restart before the portal got the confirmation) appears here once; across runs, de-duplicate by ``id``
    (``SaveQuickAnswerOperator`` does: saving a message again updates the same answer).
    """
    found: dict[tuple[int, str], dict[str, Any]] = {}
    for event in events:
        extra = getattr(event, "extra", None)
        payload = extra.get("payload", extra) if isinstance(extra, Mapping) else event
        if not isinstance(payload, Mapping):
            continue
        listed = payload.get("messages")
        items: list[Any] = listed if isinstance(listed, list) else [payload]
        for item in items:
            if isinstance(item, Mapping) and isinstance(item.get("id"), int):
                found.setdefault((item["id"], str(item.get("event_type", MESSAGE_ADD))), dict(item))
    return [found[key] for key in sorted(found)]


def by_chat(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{"chat_id": ..., "message_id": [records]}, ...]``: keyword sets for ``SaveQuickAnswerOperator``."""
    chats: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        chats.setdefault(record["chat_id"], []).append(dict(record))
    return [{"chat_id": chat_id, "message_id": items} for chat_id, items in sorted(chats.items())]
