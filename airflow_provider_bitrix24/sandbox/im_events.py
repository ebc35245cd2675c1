"""
The messenger's per-user event queue: ``im.v2.Event.subscribe``, ``im.v2.Event.get``, ``im.v2.Event.unsubscribe``.

The rules follow the documentation (``api-reference/chat-bots/chat-bots-v2/im.v2/events/``) and the server's code:

* Nothing is recorded for a user until it subscribes; ``get`` without a subscription answers an empty list.
  Unsubscribing stops recording; events already recorded stay until confirmed or expired.
* Every message added to a chat (:meth:`PortalState.add_message <airflow_provider_bitrix24.sandbox.state.PortalState.add_message>`
  is the single path: CLI, control API, scripts) is recorded once for each subscribed **member** of the chat,
  its author included. Operators of the line who are not members get nothing.
* Event ids come from one counter shared by every user: increasing, not contiguous per user.
* ``get(offset, limit)``: ``offset > 0`` deletes the user's events with ids below it (the confirmation), then
  answers the events from ``offset`` on, ascending, at most ``limit`` (clamped to 1..1000, default 100);
  ``nextOffset`` is ``max(offset, last id + 1)`` (the offset sent when nothing is left) and ``hasMore`` is
  ``len(events) >= limit``. Reading again with the same offset redelivers what was not confirmed.
* One queue per user: a second reader of the same user confirms (deletes) events the first has not seen.
* Events older than ``config.im_event_retention`` seconds (24 h on real portals) are dropped without trace.
* ``config.im_events_available = False`` plays an older portal: the three methods answer ``ERROR_METHOD_NOT_FOUND``.

The ``data`` of an event is the documented one (``events.md``): ``message``, ``chat``, ``user`` (the author),
``language``; ``ONIMV2MESSAGEDELETE`` carries ``messageId`` instead of ``message``. What an open-line chat looks like
in it is not documented: the sandbox sends ``entityType`` ``LINES``, ``entityId``
``connector|line|chat|user``, ``entityData1`` with the session at index 5 (as ``imopenlines`` does elsewhere),
``type`` ``lines`` and ``messageType`` ``L``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_bitrix24.sandbox.errors import RestError
from airflow_provider_bitrix24.sandbox.params import to_int

if TYPE_CHECKING:
    from airflow_provider_bitrix24.sandbox.methods import CallContext
    from airflow_provider_bitrix24.sandbox.state import Chat, Message, PortalState, User

MESSAGE_ADD = "ONIMV2MESSAGEADD"
MESSAGE_UPDATE = "ONIMV2MESSAGEUPDATE"
MESSAGE_DELETE = "ONIMV2MESSAGEDELETE"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: The first event id (the shared counter of ``b_im_event_log``).
FIRST_EVENT_ID = 2001


@dataclass
class _Entry:
    event_id: int
    created: float
    event: dict[str, Any]


class EventLog:
    """Subscriptions and queued events of every user of one portal state. Callers hold the state's lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.subscribed: set[int] = set()
        self.queues: dict[int, list[_Entry]] = {}
        self._next_id = FIRST_EVENT_ID

    def pending(self, user_id: int) -> list[int]:
        """Ids of the events waiting in a user's queue (tests)."""
        with self.lock:
            return [entry.event_id for entry in self.queues.get(user_id, [])]

    def record(self, state: PortalState, chat: Chat, kind: str, data: dict[str, Any], when: float) -> None:
        """Record one event for every subscribed member of ``chat``."""
        from airflow_provider_bitrix24.sandbox.render import iso

        with self.lock:
            recipients = [uid for uid in chat.member_ids if uid in self.subscribed]
            if not recipients:
                return
            date = iso(when, state_offset(state))
            for user_id in recipients:
                event = {"eventId": self._next_id, "type": kind, "date": date, "data": data}
                self.queues.setdefault(user_id, []).append(_Entry(self._next_id, time.time(), event))
                self._next_id += 1

    def fetch(self, user_id: int, offset: int, limit: int, retention: float) -> dict[str, Any]:
        """The answer of ``im.v2.Event.get`` for one user (confirms below ``offset``)."""
        with self.lock:
            queue = self.queues.get(user_id, [])
            oldest = time.time() - retention
            queue = [e for e in queue if e.created >= oldest and (offset <= 0 or e.event_id >= offset)]
            self.queues[user_id] = queue
            page = queue[:limit]
            last = page[-1].event_id + 1 if page else 0
            return {
                "events": [_copy(e.event) for e in page],
                "nextOffset": max(offset, last),
                "hasMore": len(page) >= limit,
            }


def state_offset(state: PortalState) -> int:
    """The portal's time-zone offset, minutes (the state keeps the live config)."""
    return int(state.config.tz_offset_minutes)


# -- what an event carries -------------------------------------------------------------------------------------------


def message_data(state: PortalState, message: Message) -> dict[str, Any]:
    from airflow_provider_bitrix24.sandbox.render import iso, rendered_text

    names = {uid: user.name for uid, user in state.users.items()}
    return {
        "id": message.id,
        "chatId": message.chat_id,
        "authorId": message.author_id,
        "date": iso(message.date, state_offset(state)),
        "text": rendered_text(message.text, names),
        "isSystem": message.author_id == 0,
        "uuid": "",
        "forward": None,
        "params": dict(message.params),
        "viewedByOthers": False,
    }


def chat_data(state: PortalState, chat: Chat) -> dict[str, Any]:
    from airflow_provider_bitrix24.sandbox.render import entity_data_1, entity_data_2

    return {
        "id": chat.id,
        "dialogId": f"chat{chat.id}",
        "name": chat.title,
        "type": "lines" if chat.is_lines else "chat",
        "messageType": "L" if chat.is_lines else "C",
        "owner": chat.owner_id,
        "color": chat.color,
        "avatar": "",
        "description": "",
        "extranet": False,
        "containsCollaber": False,
        "entityType": chat.entity_type,
        "entityId": chat.user_code,
        "entityData1": entity_data_1(state, chat),
        "entityData2": entity_data_2(chat),
        "entityData3": "",
        "entityLink": {},
        "diskFolderId": 0,
        "permissions": {},
        "parentChatId": 0,
        "parentMessageId": 0,
        "isNew": False,
        "textFieldEnabled": "Y",
        "backgroundId": None,
    }


def user_data(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {
        "id": user.id,
        "active": True,
        "name": user.name,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "workPosition": user.work_position or "",
        "color": user.color,
        "avatar": "",
        "gender": user.gender,
        "birthday": "",
        "extranet": False,
        "bot": user.bot,
        "connector": user.connector,
        "externalAuthId": user.external_auth_id,
        "status": "online",
        "idle": False,
        "lastActivityDate": False,
        "mobileLastDate": False,
        "desktopLastDate": False,
        "absent": False,
        "departments": list(user.departments),
        "phones": False,
        "website": "",
        "email": "",
        "type": "bot" if user.bot else "extranet" if user.connector else "employee",
    }


def on_message_added(state: PortalState, message: Message) -> None:
    """Record ``ONIMV2MESSAGEADD`` for the chat's subscribed members (called by ``PortalState.add_message``)."""
    chat = state.chats[message.chat_id]
    data = {
        "message": message_data(state, message),
        "chat": chat_data(state, chat),
        "user": user_data(state.users.get(message.author_id)),
        "language": "en",
    }
    state.events.record(state, chat, MESSAGE_ADD, data, message.date)


def edit_message(state: PortalState, message_id: int, text: str) -> None:
    """Change a message's text and record ``ONIMV2MESSAGEUPDATE``. Hold the state's lock."""
    message = state.messages[message_id]
    message.text = text
    chat = state.chats[message.chat_id]
    data = {
        "message": message_data(state, message),
        "chat": chat_data(state, chat),
        "user": user_data(state.users.get(message.author_id)),
        "language": "en",
    }
    state.events.record(state, chat, MESSAGE_UPDATE, data, time.time())


def delete_message(state: PortalState, message_id: int) -> None:
    """Record ``ONIMV2MESSAGEDELETE`` (``messageId`` only) for a message. Hold the state's lock."""
    message = state.messages[message_id]
    chat = state.chats[message.chat_id]
    data = {
        "messageId": message.id,
        "chat": chat_data(state, chat),
        "user": user_data(state.users.get(message.author_id)),
        "language": "en",
    }
    state.events.record(state, chat, MESSAGE_DELETE, data, time.time())


# -- REST methods ----------------------------------------------------------------------------------------------------


def _available(ctx: CallContext) -> None:
    if not ctx.config.im_events_available:
        raise RestError("ERROR_METHOD_NOT_FOUND")


def event_subscribe(ctx: CallContext) -> Any:
    """``im.v2.Event.subscribe``: start recording the caller's events (idempotent)."""
    _available(ctx)
    with ctx.state.lock:
        ctx.state.events.subscribed.add(ctx.caller.user_id)
    return True


def event_unsubscribe(ctx: CallContext) -> Any:
    """``im.v2.Event.unsubscribe``: stop recording (idempotent); recorded events stay."""
    _available(ctx)
    with ctx.state.lock:
        ctx.state.events.subscribed.discard(ctx.caller.user_id)
    return True


def event_get(ctx: CallContext) -> Any:
    """``im.v2.Event.get``: confirm below ``offset``, answer the events from it (see the module docstring)."""
    _available(ctx)
    offset = to_int(ctx.params.get("offset", 0))
    raw_limit = ctx.params.get("limit")
    limit = DEFAULT_LIMIT if raw_limit in (None, "") else min(MAX_LIMIT, max(1, to_int(raw_limit)))
    with ctx.state.lock:
        return ctx.state.events.fetch(ctx.caller.user_id, offset, limit, ctx.config.im_event_retention)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
