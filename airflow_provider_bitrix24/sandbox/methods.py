"""
REST methods of the sandbox portal.

Each handler receives a :class:`CallContext` and returns the ``result`` value (or a :class:`MethodResult` for list
methods), or raises :class:`~airflow_provider_bitrix24.sandbox.errors.RestError`. Error codes, descriptions,
statuses and their order follow the real portal (see ``imopenlines.message.quick.save`` below for the
de-duplication steps).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_bitrix24.sandbox import crm, im, im_events, render
from airflow_provider_bitrix24.sandbox.config import SandboxConfig
from airflow_provider_bitrix24.sandbox.errors import CHAT_ACCESS_TEXT, HISTORY_CHAT_ID_IGNORED_TEXT, RestError
from airflow_provider_bitrix24.sandbox.params import is_true, to_int, upper_keys
from airflow_provider_bitrix24.sandbox.state import Chat, Line, PortalState, QuickAnswer, answer_name

#: Every scope the portal knows (``scope`` with ``full=true``).
PORTAL_SCOPES = [
    "bizproc", "calendar", "catalog", "crm", "department", "disk", "entity", "im", "imbot", "imconnector",
    "imopenlines", "lists", "log", "placement", "pull", "sale", "sonet_group", "task", "telephony", "user",
    "user_basic", "user_brief",
]  # fmt: skip
USER_SCOPES = ("user", "user_brief", "user_basic")


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``kind`` is ``webhook`` or ``oauth``; ``credential`` keys the operating limit."""

    kind: str
    user_id: int
    scopes: tuple[str, ...]
    credential: str


@dataclass
class CallContext:
    state: PortalState
    config: SandboxConfig
    caller: Caller
    params: dict[str, Any]
    base_url: str
    stop_event: threading.Event = field(default_factory=threading.Event)

    @property
    def offset(self) -> int:
        return self.config.tz_offset_minutes


@dataclass
class MethodResult:
    """Result of a list method: the page plus ``total`` and, when another page exists, ``next``."""

    result: Any
    total: int | None = None
    next: int | None = None


Handler = Callable[[CallContext], Any]


@dataclass(frozen=True)
class MethodSpec:
    """A REST method: its scopes (empty = global, needs none) and handler (``None`` for ``batch``)."""

    name: str
    scopes: tuple[str, ...]
    handler: Handler | None

    def available_to(self, granted: tuple[str, ...]) -> bool:
        return not self.scopes or any(s in granted for s in self.scopes)


# -- connection-test methods ---------------------------------------------------------------------------------------


def profile(ctx: CallContext) -> Any:
    user = ctx.state.users[ctx.caller.user_id]
    return {
        "ID": str(user.id),
        "ADMIN": user.admin,
        "NAME": user.first_name,
        "LAST_NAME": user.last_name,
        "PERSONAL_GENDER": user.gender,
        "TIME_ZONE": "",
        "TIME_ZONE_OFFSET": ctx.offset * 60,
    }


def scope(ctx: CallContext) -> Any:
    if is_true(ctx.params.get("full")):
        return list(PORTAL_SCOPES)
    return list(ctx.caller.scopes)


def method_get(ctx: CallContext) -> Any:
    name = str(ctx.params.get("name") or "").strip().lower()
    spec = METHODS.get(name) if name else None
    return {"isExisting": spec is not None, "isAvailable": bool(spec and spec.available_to(ctx.caller.scopes))}


def methods(ctx: CallContext) -> Any:
    wanted = ctx.params.get("scope")
    if wanted not in (None, ""):
        return [name for name, spec in METHODS.items() if str(wanted) in spec.scopes]
    if is_true(ctx.params.get("full")):
        return list(METHODS)
    return [name for name, spec in METHODS.items() if spec.available_to(ctx.caller.scopes)]


def server_time(ctx: CallContext) -> Any:
    return render.iso(time.time(), ctx.offset)


def user_admin(ctx: CallContext) -> Any:
    return ctx.state.users[ctx.caller.user_id].admin


def app_info(ctx: CallContext) -> Any:
    if ctx.caller.kind == "oauth":
        return {
            "ID": 5,
            "CODE": ctx.config.oauth_client_id,
            "VERSION": 1,
            "STATUS": "L",
            "INSTALLED": True,
            "PAYMENT_EXPIRED": "N",
            "DAYS": None,
            "LANGUAGE_ID": "en",
            "LICENSE": "en_project",
            "LICENSE_TYPE": "project",
            "LICENSE_FAMILY": "project",
        }
    return {"SCOPE": list(ctx.caller.scopes), "LICENSE": "en_project"}


def user_current(ctx: CallContext) -> Any:
    return render.portal_user_record(ctx.state.users[ctx.caller.user_id], ctx.offset)


def user_get(ctx: CallContext) -> Any:
    """Employees (not clients), ``config.list_page_size`` per page, ``start=-1`` skips counting."""
    wanted = to_int(ctx.params.get("ID")) if ctx.params.get("ID") not in (None, "") else None
    with ctx.state.lock:
        users = [u for _, u in sorted(ctx.state.users.items()) if not u.connector and not u.bot]
        if wanted is not None:
            users = [u for u in users if u.id == wanted]
        records = [render.portal_user_record(u, ctx.offset) for u in users]
    size = max(1, ctx.config.list_page_size)
    start = to_int(ctx.params.get("start"))
    if start < 0:
        return MethodResult(records[:size], total=0)
    page = records[start : start + size]
    more = start + size < len(records)
    return MethodResult(page, total=len(records), next=start + size if more else None)


# -- Open Lines ----------------------------------------------------------------------------------------------------


def _check_chat(state: PortalState, user_id: int, chat_id: int) -> None:
    """The chat access check of ``quick.save``, with the portal's order of error codes."""
    if chat_id <= 0:
        raise RestError("CHAT_ID")
    chat = state.chats.get(chat_id)
    if chat is not None and user_id in chat.member_ids:
        if not chat.is_lines:
            raise RestError("CHAT_TYPE")
        return
    if chat is None:
        raise RestError("CHAT_ID")
    if not chat.is_lines:
        raise RestError("CHAT_TYPE")
    if not state.can_access(user_id, chat):
        raise RestError("ACCESS_DENIED", CHAT_ACCESS_TEXT, 400)


def _lookup_answer(line: Line, message_id: int, text: str) -> bool:
    """Steps 4 and 5: update the answer saved from this message, or find one with the same text."""
    for answer in line.answers:
        if answer.message_id == message_id:
            answer.text = text
            answer.name = answer_name(text)
            return True
    return any(answer.text == text for answer in line.answers)


def _insert_answer(state: PortalState, line: Line, message_id: int, text: str) -> None:
    """Step 6: add a new answer (rating 1, no section)."""
    answer = QuickAnswer(state.new_answer_id(), line.id, answer_name(text), text, message_id=message_id)
    line.answers.append(answer)


def quick_save(ctx: CallContext) -> Any:
    """
    ``imopenlines.message.quick.save``: copy a message into the quick answers of the chat's line.

    1. unknown ``MESSAGE_ID`` -> ``CANT_SAVE_QUICK_ANSWER``; 2. access checks on ``CHAT_ID``, then on the
    message's own chat; 3. the caller needs rights on the line's list (administrator or line operator);
    4. an answer saved from the same message gets the current text; 5. else an answer with the same text is
    reused unchanged; 6. else a new answer is added. With ``quick_save_race`` the lookup and the insert are not
    atomic, so concurrent saves of one message can both insert.
    """
    state, user_id = ctx.state, ctx.caller.user_id
    chat_id = to_int(ctx.params.get("CHAT_ID"))
    message_id = to_int(ctx.params.get("MESSAGE_ID"))
    with state.lock:
        message = state.messages.get(message_id)
        if message is None:
            raise RestError("CANT_SAVE_QUICK_ANSWER")
        _check_chat(state, user_id, chat_id)
        _check_chat(state, user_id, message.chat_id)
        line = state.lines.get(state.chats[chat_id].line_id)
        if line is None or not (state.users[user_id].admin or user_id in line.operator_ids):
            raise RestError("CANT_SAVE_QUICK_ANSWER")
        text = message.text
        if _lookup_answer(line, message_id, text):
            return True
        if not ctx.config.quick_save_race:
            _insert_answer(state, line, message_id, text)
            return True
    ctx.stop_event.wait(ctx.config.race_window)
    with state.lock:
        _insert_answer(state, line, message_id, text)
    return True


def _history_session(ctx: CallContext) -> tuple[Chat, int]:
    state = ctx.state
    session_id = to_int(ctx.params.get("SESSION_ID"))
    chat_id = to_int(ctx.params.get("CHAT_ID"))
    if session_id <= 0:
        if ctx.config.history_ignores_chat_id:
            # Older imopenlines versions read SESSION_ID only: without it there is no session to open.
            raise RestError("ACCESS_DENIED", HISTORY_CHAT_ID_IGNORED_TEXT, 400)
        if chat_id <= 0:
            raise RestError("MISSING_REQUIRED_PARAM")
        chat = state.chats.get(chat_id)
        latest = state.latest_session(chat) if chat is not None else None
        if latest is None:
            raise RestError("INVALID_SESSION_ID")
        session_id = latest.id
    session = state.sessions.get(session_id)
    if session is None:
        raise RestError("ACCESS_DENIED", CHAT_ACCESS_TEXT, 400)
    chat = state.chats[session.chat_id]
    if not state.can_access(ctx.caller.user_id, chat):
        raise RestError("ACCESS_DENIED", CHAT_ACCESS_TEXT, 400)
    return chat, session_id


def session_history(ctx: CallContext) -> Any:
    """
    ``imopenlines.session.history.get``: the messages of exactly one session, newest first by date (messages of
    the same second in id order), rendered as the portal renders them. A session without messages answers
    with an empty ``message`` map (``[]``).
    """
    state, offset, user_id = ctx.state, ctx.offset, ctx.caller.user_id
    with state.lock:
        chat, session_id = _history_session(ctx)
        session = state.sessions[session_id]
        ordered = sorted(session.message_ids, key=lambda i: (-int(state.messages[i].date), i))
        messages = [state.messages[i] for i in ordered]
        names = {uid: user.name for uid, user in state.users.items()}
        items = {str(m.id): render.message_item(m, offset, names) for m in messages}
        authors = list(dict.fromkeys(m.author_id for m in messages if m.author_id))
        users = {str(uid): render.user_item(state.users[uid], offset) for uid in authors}
        groups: dict[str, Any] = {}
        for uid in authors:
            for dep in state.users[uid].departments:
                groups.setdefault(str(dep), {"id": dep, "users": []})["users"].append(str(uid))
        file_ids = [fid for m in messages for fid in m.params.get("fileId", []) if fid in state.files]
        files = {str(fid): render.file_item(state.files[fid], ctx.base_url, offset) for fid in file_ids}
        for item in files.values():
            author = state.users.get(item["authorid"])
            item["authorname"] = author.name if author else ""
        admin = state.users[user_id].admin
        key = str(chat.id)
        return {
            "chatId": chat.id,
            "canJoin": "Y",
            "canVoteHead": "Y" if admin else "N",
            "sessionId": session.id,
            "sessionVoteHead": 0,
            "sessionCommentHead": None,
            "userId": f"chat{chat.id}",
            "message": render.php_map(items),
            "usersMessage": {f"chat{chat.id}": [str(m.id) for m in messages]},
            "users": render.php_map(users),
            "openlines": {"canvoteashead": {str(chat.line_id): admin}},
            "userInGroup": render.php_map(groups),
            "woUserInGroup": [],
            "chat": {key: render.history_chat_item(state, chat, offset)},
            "userBlockChat": {key: {str(uid): False for uid in chat.member_ids}},
            "userInChat": {key: list(chat.member_ids)},
            "files": render.php_map(files),
        }


def dialog_get(ctx: CallContext) -> Any:
    """``imopenlines.dialog.get``: one of ``CHAT_ID`` > ``DIALOG_ID`` > ``SESSION_ID`` > ``USER_CODE``."""
    state = ctx.state
    params = upper_keys(ctx.params)
    with state.lock:
        chat: Chat | None = None
        if params.get("CHAT_ID") not in (None, "", 0, "0"):
            chat = state.chats.get(to_int(params["CHAT_ID"]))
        elif params.get("DIALOG_ID") not in (None, ""):
            match = re.fullmatch(r"chat(\d+)", str(params["DIALOG_ID"]).strip())
            chat = state.chats.get(int(match.group(1))) if match else None
        elif params.get("SESSION_ID") not in (None, "", 0, "0"):
            session = state.sessions.get(to_int(params["SESSION_ID"]))
            chat = state.chats.get(session.chat_id) if session else None
        elif params.get("USER_CODE") not in (None, ""):
            code = str(params["USER_CODE"]).strip()
            chat = state.chat_by_user_code(code.removeprefix("imol|"))
        if chat is None or not state.can_access(ctx.caller.user_id, chat):
            raise RestError("ACCESS_ERROR")
        return render.dialog_item(state, chat, ctx.caller.user_id, ctx.offset)


def session_open(ctx: CallContext) -> Any:
    """``imopenlines.session.open``: resolve a ``USER_CODE`` to its chat id (a string)."""
    code = str(ctx.params.get("USER_CODE") or "").strip()
    with ctx.state.lock:
        chat = ctx.state.chat_by_user_code(code) if code else None
        if chat is None or not chat.is_lines or not ctx.state.can_access(ctx.caller.user_id, chat):
            raise RestError("ACCESS_DENIED", CHAT_ACCESS_TEXT, 400)
        return {"chatId": str(chat.id)}


def crm_chat_get(ctx: CallContext) -> Any:
    """``imopenlines.crm.chat.get``: open-line chats bound to a CRM object."""
    entity_type = str(ctx.params.get("CRM_ENTITY_TYPE") or "").strip()
    if not entity_type:
        raise RestError("ERROR_ARGUMENT", "Argument 'CRM_ENTITY_TYPE' is null or empty", argument="CRM_ENTITY_TYPE")
    raw = ctx.params.get("CRM_ENTITY")
    if raw in (None, "", 0, "0"):
        raise RestError("ERROR_ARGUMENT", "Argument 'CRM_ENTITY' is null or empty", argument="CRM_ENTITY")
    if isinstance(raw, bool) or not re.fullmatch(r"\d+", str(raw).strip()) or int(str(raw).strip()) <= 0:
        raise RestError(
            "ERROR_ARGUMENT", "The value of an argument 'CRM_ENTITY' has an invalid type", argument="CRM_ENTITY"
        )
    entity_id = int(str(raw).strip())
    active_only = str(ctx.params.get("ACTIVE_ONLY", "Y")).strip().upper() != "N"
    state = ctx.state
    with state.lock:
        bound = [c for c in state.chats.values() if c.crm_type == entity_type.upper() and c.crm_id == entity_id]
        visible = [c for c in bound if state.can_access(ctx.caller.user_id, c)]
        if bound and not visible:
            raise RestError("ACCESS_DENIED", "Access denied! You don't have access to this action", 403)
        result = []
        for chat in visible:
            latest = state.latest_session(chat)
            if active_only and (latest is None or latest.closed):
                continue
            title = render.CONNECTOR_TITLES.get(chat.connector, chat.connector)
            result.append({"CHAT_ID": str(chat.id), "CONNECTOR_ID": chat.connector, "CONNECTOR_TITLE": title})
        return result


def _spec(name: str, handler: Handler | None, *scopes: str) -> tuple[str, MethodSpec]:
    return name, MethodSpec(name, tuple(scopes), handler)


METHODS: dict[str, MethodSpec] = dict(
    [
        _spec("batch", None),
        _spec("profile", profile),
        _spec("scope", scope),
        _spec("method.get", method_get),
        _spec("methods", methods),
        _spec("server.time", server_time),
        _spec("user.admin", user_admin),
        _spec("app.info", app_info),
        _spec("user.current", user_current, *USER_SCOPES),
        _spec("user.get", user_get, *USER_SCOPES),
        _spec("imopenlines.message.quick.save", quick_save, "imopenlines"),
        _spec("imopenlines.session.history.get", session_history, "imopenlines"),
        _spec("imopenlines.dialog.get", dialog_get, "imopenlines"),
        _spec("imopenlines.session.open", session_open, "imopenlines"),
        _spec("imopenlines.crm.chat.get", crm_chat_get, "imopenlines"),
        _spec("im.message.add", im.message_add, "im"),
        _spec("im.dialog.messages.get", im.dialog_messages, "im"),
        _spec("im.v2.event.subscribe", im_events.event_subscribe, "im"),
        _spec("im.v2.event.get", im_events.event_get, "im"),
        _spec("im.v2.event.unsubscribe", im_events.event_unsubscribe, "im"),
        _spec("crm.activity.list", crm.activity_list, "crm"),
    ]
)
