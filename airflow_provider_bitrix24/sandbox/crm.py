"""
``crm.activity.list`` for the sandbox's open-line sessions, and a generator of many sessions for benchmarks.

A portal keeps one CRM activity per open-line session, written by the imopenlines module (server code
``imopenlines/lib/crm/activity.php``; the activity type is not in the REST documentation): ``PROVIDER_ID``
``IMOPENLINES_SESSION``, ``PROVIDER_TYPE_ID`` the line, ``ASSOCIATED_ENTITY_ID`` the session, ``ORIGIN_ID``
``IMOL_<session>``, ``PROVIDER_PARAMS`` ``{"USER_CODE": "connector|line|connector chat|client"}``,
``COMMUNICATIONS[].VALUE`` ``imol|<USER_CODE>``, ``RESPONSIBLE_ID`` the operator, ``START_TIME`` the session's start,
``END_TIME`` its close. Values are strings, as the documented answer shows. Here the activity of session ``s`` has
id ``ACTIVITY_ID_BASE + s`` and its ``LAST_UPDATED`` is the time of the session's last message (or its start): the
sandbox's model of "the session changed".

Paging follows the portal: 50 rows a page; with ``start >= 0`` the answer carries ``total`` and ``next``, and the
selection is counted on every page (with a latency model on, the count costs :data:`COUNT_SECONDS_PER_ROW` per row of
the selection, the ratio the portal's large-data guide measured); with ``start=-1`` (keyset mode) nothing is counted:
``total`` is 0 and there is no ``next``. ``order`` takes any field (default ``START_TIME`` ascending, then ``ID``);
``filter`` takes ``FIELD``, ``>FIELD``, ``>=FIELD``, ``<FIELD``, ``<=FIELD`` and ``!FIELD``; ``select`` keeps the
named fields (``*``: all but ``COMMUNICATIONS``, which comes only when selected). A filter value that is not a
number where one is expected (a ``batch`` reference that did not resolve, past the end of a list) counts as 0.

Generated sessions (``generated_sessions`` x ``generated_messages``): chats from :data:`GEN_FIRST_CHAT_ID`, lines 1
and 2 in turn, client 109, one session starting every minute from :data:`GEN_EPOCH` (2026-03-21 00:00 UTC), its
messages one second apart, client and operator in turn; every tenth session stays open.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_bitrix24.sandbox import render
from airflow_provider_bitrix24.sandbox.errors import RestError
from airflow_provider_bitrix24.sandbox.params import to_int
from airflow_provider_bitrix24.sandbox.state import LINES, POOL_CLIENT_ID, SEED_EPOCH, Chat, PortalState, Session

if TYPE_CHECKING:
    from airflow_provider_bitrix24.sandbox.methods import CallContext

PROVIDER_ID: Final = "IMOPENLINES_SESSION"
ACTIVITY_ID_BASE: Final = 500_000
#: Seconds the portal spends counting one row of a selection (49.9 s for 2,387,743 leads, huge-data guide).
COUNT_SECONDS_PER_ROW: Final = 49.916450023651 / 2_387_743
GEN_EPOCH: Final = SEED_EPOCH + 10 * 86400 - 9 * 3600  # 2026-03-21T00:00:00Z
GEN_SPACING: Final = 60
GEN_FIRST_CHAT_ID: Final = 60001
_GEN_OPERATORS: Final = {1: 2, 2: 3}
_ANSWERS: Final = (
    "Hello! How can I help you?",
    "Your order has been shipped and arrives in 2-3 days.",
    "Please send us the order number.",
    "Thank you for contacting us! Have a nice day.",
)

_NUMERIC = frozenset(
    {"ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "ASSOCIATED_ENTITY_ID", "RESPONSIBLE_ID", "AUTHOR_ID", "EDITOR_ID"}
)
_DATES = frozenset({"CREATED", "LAST_UPDATED", "START_TIME", "END_TIME", "DEADLINE"})
_CRM_OWNER_TYPES: Final = {"LEAD": 1, "DEAL": 2, "CONTACT": 3, "COMPANY": 4}
FIELDS: Final[tuple[str, ...]] = (
    "ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "PROVIDER_ID", "PROVIDER_TYPE_ID", "PROVIDER_GROUP_ID",
    "ASSOCIATED_ENTITY_ID", "SUBJECT", "CREATED", "LAST_UPDATED", "START_TIME", "END_TIME", "DEADLINE", "COMPLETED",
    "STATUS", "RESPONSIBLE_ID", "PRIORITY", "NOTIFY_TYPE", "NOTIFY_VALUE", "DESCRIPTION", "DESCRIPTION_TYPE",
    "DIRECTION", "LOCATION", "SETTINGS", "ORIGINATOR_ID", "ORIGIN_ID", "AUTHOR_ID", "EDITOR_ID", "PROVIDER_PARAMS",
    "PROVIDER_DATA", "RESULT_MARK", "RESULT_VALUE", "RESULT_SUM", "RESULT_CURRENCY_ID", "RESULT_STATUS",
    "RESULT_STREAM", "RESULT_SOURCE_ID", "AUTOCOMPLETE_RULE", "IS_INCOMING_CHANNEL",
)  # fmt: skip


def activity_id(session_id: int) -> int:
    """The id of a session's activity."""
    return ACTIVITY_ID_BASE + session_id


def last_updated(state: PortalState, session: Session) -> float:
    """When the session's activity last changed: its last message, or its start."""
    if session.message_ids:
        return max(session.date_create, state.messages[session.message_ids[-1]].date)
    return session.date_create


def _raw(state: PortalState, session: Session, name: str) -> Any:
    """A field's value for filtering and sorting: ints for ids, epoch seconds for dates, strings else."""
    chat = state.chats[session.chat_id]
    if name == "ID":
        return activity_id(session.id)
    if name == "ASSOCIATED_ENTITY_ID":
        return session.id
    if name in ("RESPONSIBLE_ID", "AUTHOR_ID", "EDITOR_ID"):
        return session.operator_id
    if name in ("LAST_UPDATED", "DEADLINE"):
        return last_updated(state, session)
    if name in ("START_TIME", "CREATED"):
        return session.date_create
    if name == "END_TIME":
        return last_updated(state, session) if session.closed else None
    if name == "TYPE_ID":
        return 6
    if name == "OWNER_TYPE_ID":
        return _CRM_OWNER_TYPES.get(chat.crm_type, 0)
    if name == "OWNER_ID":
        return chat.crm_id
    if name == "PROVIDER_ID":
        return PROVIDER_ID
    if name == "PROVIDER_TYPE_ID":
        return str(chat.line_id)
    if name == "COMPLETED":
        return "Y" if session.closed else "N"
    if name == "ORIGIN_ID":
        return f"IMOL_{session.id}"
    if name == "RESULT_SOURCE_ID":
        return chat.connector
    return None


def _row(state: PortalState, session: Session, offset: int, select: set[str] | None) -> dict[str, Any]:
    chat = state.chats[session.chat_id]
    opened = session.date_create
    updated = last_updated(state, session)
    full: dict[str, Any] = {
        "ID": str(activity_id(session.id)),
        "OWNER_ID": str(chat.crm_id),
        "OWNER_TYPE_ID": str(_CRM_OWNER_TYPES.get(chat.crm_type, 0)),
        "TYPE_ID": "6",
        "PROVIDER_ID": PROVIDER_ID,
        "PROVIDER_TYPE_ID": str(chat.line_id),
        "PROVIDER_GROUP_ID": None,
        "ASSOCIATED_ENTITY_ID": str(session.id),
        "SUBJECT": f"{chat.title} (session {session.id})",
        "CREATED": render.iso(opened, offset),
        "LAST_UPDATED": render.iso(updated, offset),
        "START_TIME": render.iso(opened, offset),
        "END_TIME": render.iso(updated, offset) if session.closed else "",
        "DEADLINE": render.iso(updated, offset),
        "COMPLETED": "Y" if session.closed else "N",
        "STATUS": "2" if session.closed else "1",
        "RESPONSIBLE_ID": str(session.operator_id),
        "PRIORITY": "2",
        "NOTIFY_TYPE": "0",
        "NOTIFY_VALUE": "0",
        "DESCRIPTION": "",
        "DESCRIPTION_TYPE": "1",
        "DIRECTION": "1",
        "LOCATION": "",
        "SETTINGS": [],
        "ORIGINATOR_ID": None,
        "ORIGIN_ID": f"IMOL_{session.id}",
        "AUTHOR_ID": str(session.operator_id),
        "EDITOR_ID": str(session.operator_id),
        "PROVIDER_PARAMS": {"USER_CODE": chat.user_code},
        "PROVIDER_DATA": None,
        "RESULT_MARK": "0",
        "RESULT_VALUE": None,
        "RESULT_SUM": None,
        "RESULT_CURRENCY_ID": None,
        "RESULT_STATUS": "0",
        "RESULT_STREAM": "0",
        "RESULT_SOURCE_ID": chat.connector,
        "AUTOCOMPLETE_RULE": "0",
        "IS_INCOMING_CHANNEL": "Y",
    }
    row: dict[str, Any] = (
        full if select is None or "*" in select else {name: full[name] for name in FIELDS if name in select}
    )
    if select is not None and "COMMUNICATIONS" in select:
        row["COMMUNICATIONS"] = [
            {
                "ID": str(activity_id(session.id)),
                "TYPE": "IM",
                "VALUE": f"imol|{chat.user_code}",
                "ENTITY_ID": str(chat.crm_id),
                "ENTITY_TYPE_ID": str(_CRM_OWNER_TYPES.get(chat.crm_type, 0)),
            }
        ]
    return row


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return 0.0


def _date(name: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RestError("ERROR_ARGUMENT", f"the filter on {name} is not a date: {text[:40]}", 400) from None
    if parsed.tzinfo is None:
        raise RestError("ERROR_ARGUMENT", f"the filter on {name} has no time zone: {text[:40]}", 400)
    return parsed.timestamp()


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "!": lambda a, b: a != b,
    "": lambda a, b: a == b,
}


def _conditions(raw: Any) -> list[tuple[str, Callable[[Any, Any], bool], Any]]:
    if raw in (None, "", []):
        return []
    if not isinstance(raw, dict):
        raise RestError("ERROR_ARGUMENT", "filter must be an object", 400)
    out = []
    for key, value in raw.items():
        text = str(key).strip()
        for prefix in (">=", "<=", ">", "<", "!", ""):
            if text.startswith(prefix):
                name = text[len(prefix) :].upper()
                break
        if name in _NUMERIC:
            wanted: Any = _number(value)
        elif name in _DATES:
            wanted = _date(name, value)
        else:
            wanted = str(value)
        out.append((name, _OPERATORS[prefix], wanted))
    return out


def _matches(state: PortalState, session: Session, conditions: list[tuple[str, Any, Any]]) -> bool:
    for name, compare, wanted in conditions:
        value = _raw(state, session, name)
        if value is None or not compare(value, wanted):
            return False
    return True


def activity_list(ctx: CallContext) -> Any:
    """``crm.activity.list`` over the open-line sessions' activities (see the module docstring)."""
    from airflow_provider_bitrix24.sandbox.methods import MethodResult

    params = ctx.params
    conditions = _conditions(params.get("filter"))
    order_raw = params.get("order") or {"START_TIME": "ASC"}
    if not isinstance(order_raw, dict):
        raise RestError("ERROR_ARGUMENT", "order must be an object", 400)
    order = [(str(k).upper(), str(v).strip().upper() == "DESC") for k, v in order_raw.items()]
    select_raw = params.get("select")
    select = {str(s).upper() for s in select_raw} if isinstance(select_raw, list) and select_raw else None
    start = to_int(params.get("start"))
    size = max(1, ctx.config.list_page_size)
    state = ctx.state
    with state.lock:
        ordered = [state.sessions[i] for i in sorted(state.sessions)]
        keyset = start < 0 and order == [("ID", False)]
        if keyset:
            # Ordered by id: begin right after a ``>ID`` bound and stop once the page is full (no counting).
            bounds = [w for n, c, w in conditions if n == "ID" and c is _OPERATORS[">"]]
            if bounds:
                first = bisect.bisect_right([activity_id(s.id) for s in ordered], max(bounds))
                ordered = ordered[first:]
            picked = []
            for session in ordered:
                if _matches(state, session, conditions):
                    picked.append(session)
                    if len(picked) == size:
                        break
            page, total = picked, 0
        else:
            chosen = [s for s in ordered if _matches(state, s, conditions)]
            for name, descending in reversed([*order, ("ID", False)]):
                chosen.sort(key=_sorter(state, name), reverse=descending)
            total = len(chosen)
            page = chosen[:size] if start < 0 else chosen[start : start + size]
        rows = [_row(state, s, ctx.offset, select) for s in page]
    if start < 0:
        return MethodResult(rows, total=0)
    if ctx.config.latency != "off":
        ctx.stop_event.wait(total * COUNT_SECONDS_PER_ROW)  # counting the selection, outside the state's lock
    more = start + size < total
    return MethodResult(rows, total=total, next=start + size if more else None)


def _sorter(state: PortalState, name: str) -> Callable[[Session], tuple[int, Any]]:
    return lambda session: _sort_key(_raw(state, session, name))


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value))


# -- generated sessions --------------------------------------------------------------------------------------------


def load_generated(state: PortalState, sessions: int, messages: int) -> None:
    """Add ``sessions`` open-line sessions of ``messages`` messages each (see the module docstring)."""
    for index in range(sessions):
        line_id = 1 + index % 2
        operator = _GEN_OPERATORS[line_id]
        chat_id = GEN_FIRST_CHAT_ID + index
        started = float(GEN_EPOCH + index * GEN_SPACING)
        code = f"livechat|{line_id}|{90001 + index}|{POOL_CLIENT_ID}"
        title = f"Pool Client #{index + 1} - {state.lines[line_id].name}"
        state.chats[chat_id] = Chat(chat_id, title, LINES, line_id, code, operator, [POOL_CLIENT_ID, operator], started)
        session = Session(state._next_session_id, chat_id, operator, started, closed=index % 10 != 9)
        state._next_session_id += 1
        state.sessions[session.id] = session
        state.chats[chat_id].session_ids.append(session.id)
        for number in range(messages):
            if number % 2 == 0:
                author, text = POOL_CLIENT_ID, f"Question {number // 2 + 1} of session {session.id}: where is my order?"
            else:
                author, text = operator, _ANSWERS[(index + number // 2) % len(_ANSWERS)]
            state.add_message(session.id, author, text, date=started + number)
