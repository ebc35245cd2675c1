"""
Messenger methods of the sandbox portal: ``im.message.add`` and ``im.dialog.messages.get``.

Every message goes through :meth:`PortalState.add_message <airflow_provider_bitrix24.sandbox.state.PortalState.add_message>`,
so a message sent into an open-line chat lands in the chat's current session (``imopenlines.session.history.get``
shows it) exactly like one added from the CLI or the control API.

Errors follow the method's documentation (``api-reference/chats/messages/im-message-add.md``): ``CHAT_ID_EMPTY`` for
``chat`` without a number, ``USER_ID_EMPTY`` for a private dialog without a user id, ``USER_NOT_FOUND``, ``CHAT_ID``
for a chat that does not exist, ``ACCESS_ERROR`` (HTTP 403, as the server code raises it) when the caller may not
write into the chat, and ``MESSAGE_EMPTY`` for a message with neither text nor attachment. A text longer than
:data:`MAX_TEXT` characters is cut and ends with ``" (...)"``, as the Chat Bots 2.0 pages document for the same
message storage.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_bitrix24.sandbox import render
from airflow_provider_bitrix24.sandbox.errors import RestError
from airflow_provider_bitrix24.sandbox.params import to_int, upper_keys
from airflow_provider_bitrix24.sandbox.state import Chat, PortalState

if TYPE_CHECKING:
    from airflow_provider_bitrix24.sandbox.methods import CallContext

#: Longest message text the portal keeps; longer texts are cut and marked with ``" (...)"``.
MAX_TEXT = 20_000
#: Marks a private chat between two users (``chat.entity_type``); the sandbox creates one on the first message.
PRIVATE = "PRIVATE"
#: ``im.dialog.messages.get``: default and largest page.
PAGE = 20
MAX_PAGE = 50

_CHAT = re.compile(r"(chat|sg)(\d*)", re.IGNORECASE)


def _private_chat(state: PortalState, me: int, other: int) -> Chat:
    """The private chat of two users, created on first use (a user may also write to themself)."""
    members = sorted({me, other})
    for chat in state.chats.values():
        if chat.entity_type == PRIVATE and sorted(chat.member_ids) == members:
            return chat
    chat = Chat(max(state.chats) + 1, "", PRIVATE, 0, "", me, list(members), time.time())
    state.chats[chat.id] = chat
    return chat


def _dialog(ctx: CallContext, raw: Any) -> Chat:
    """Resolve ``DIALOG_ID`` (``chatN``, ``sgN`` or a user id) to a chat the caller may write into."""
    state, me = ctx.state, ctx.caller.user_id
    dialog = str(raw if raw is not None else "").strip()
    match = _CHAT.fullmatch(dialog)
    if match is not None:
        number = int(match.group(2)) if match.group(2) else 0
        if number <= 0:
            raise RestError(
                "CHAT_ID_EMPTY", "Recipient chat identifier is not specified when sending a message in a chat"
            )
        chat = state.chats.get(number) if match.group(1).lower() == "chat" else None
        if chat is None:
            raise RestError("CHAT_ID", "Error creating message. Ensure that a chat with such ID exists.", 400)
        if not state.can_access(me, chat):
            raise RestError("ACCESS_ERROR", "Action unavailable", 403)
        return chat
    user_id = to_int(dialog) if dialog.isascii() and dialog.isdigit() else 0
    if user_id <= 0:
        raise RestError(
            "USER_ID_EMPTY", "Recipient identifier is not specified when sending a message in a one-on-one chat"
        )
    if user_id not in state.users:
        raise RestError("USER_NOT_FOUND", "User not found", 400)
    return _private_chat(state, me, user_id)


def message_add(ctx: CallContext) -> Any:
    """``im.message.add``: post ``MESSAGE`` (BB codes kept as sent) into ``DIALOG_ID``; the result is the message id."""
    params = upper_keys(ctx.params)
    text = params.get("MESSAGE")
    text = "" if text is None else str(text)
    attach = params.get("ATTACH")
    with ctx.state.lock:
        chat = _dialog(ctx, params.get("DIALOG_ID"))
        if not text.strip() and attach in (None, "", [], {}):
            raise RestError("MESSAGE_EMPTY", "Message text is not provided")
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - len(" (...)")] + " (...)"
        message = ctx.state.add_message(None, ctx.caller.user_id, text, chat_id=chat.id)
        if attach not in (None, "", [], {}):
            message.params["ATTACH"] = attach
        if str(params.get("SYSTEM", "N")).strip().upper() == "Y":
            message.params["SYSTEM"] = "Y"
        return message.id


def dialog_messages(ctx: CallContext) -> Any:
    """``im.dialog.messages.get``: the newest messages of a dialog (``LIMIT`` up to 50, older than ``LAST_ID``)."""
    params = upper_keys(ctx.params)
    state = ctx.state
    limit = min(MAX_PAGE, to_int(params.get("LIMIT")) or PAGE)
    last_id = to_int(params.get("LAST_ID"))
    with state.lock:
        chat = _dialog(ctx, params.get("DIALOG_ID"))
        ids = sorted((i for i in chat.message_ids if last_id <= 0 or i < last_id), reverse=True)[:limit]
        messages = [state.messages[i] for i in ids]
        authors = list(dict.fromkeys(m.author_id for m in messages if m.author_id))
        return {
            "chat_id": chat.id,
            "messages": [
                {
                    "id": m.id,
                    "chat_id": m.chat_id,
                    "author_id": m.author_id,
                    "date": render.iso(m.date, ctx.offset),
                    "text": m.text,
                    "params": dict(m.params) or None,
                }
                for m in messages
            ],
            "users": [render.user_item(state.users[uid], ctx.offset) for uid in authors],
            "files": [],
        }


def chat_messages(state: PortalState, chat_id: int) -> list[dict[str, Any]]:
    """Every message of a chat, oldest first (for tests and the control API)."""
    with state.lock:
        chat = state.chats.get(chat_id)
        if chat is None:
            raise LookupError(f"chat {chat_id} does not exist")
        return [
            {
                "id": m.id,
                "chat_id": m.chat_id,
                "session_id": m.session_id,
                "author_id": m.author_id,
                "date": m.date,
                "text": m.text,
                "params": dict(m.params),
            }
            for m in (state.messages[i] for i in sorted(chat.message_ids))
        ]
