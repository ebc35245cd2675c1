"""
Find the open-line sessions of a time window and read their histories; plain Python, no Airflow.

A portal keeps one CRM activity per open-line session (``crm.activity.list``, ``PROVIDER_ID``
``IMOPENLINES_SESSION``). The activity type is not in the REST documentation; its fields come from the imopenlines
server code (``imopenlines/lib/crm/activity.php``): ``ASSOCIATED_ENTITY_ID`` is the session, ``PROVIDER_TYPE_ID``
the line, ``RESPONSIBLE_ID`` the operator, ``START_TIME`` / ``END_TIME`` the session's start and close, and
``PROVIDER_PARAMS.USER_CODE`` the session's user code ``connector|line|connector's chat|client`` (the chat there is
the messenger's, not the portal's; the portal's chat id comes with the session's history). An ``imol|`` prefix is
accepted (``COMMUNICATIONS[].VALUE`` carries the code with it). Not confirmed against a live portal: whether
``PROVIDER_PARAMS`` comes as an object or a JSON string (both are read), and ``start=-1`` on this method.

A window is half-open, ``[start, end)``, on ``LAST_UPDATED`` (sessions that changed in it), in the time zone its
bounds carry. Finding sessions needs the ``crm`` scope.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_bitrix24.history import METHOD as HISTORY_METHOD
from airflow_provider_bitrix24.history import HistoryPayloadError, _payload_int, extract_messages

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.core import BatchItem
    from airflow_provider_bitrix24.client.sync import Bitrix24Client

ACTIVITY_METHOD: Final = "crm.activity.list"
PROVIDER_ID: Final = "IMOPENLINES_SESSION"
SCOPE: Final = "crm"
SELECT: Final = (
    "ID", "ASSOCIATED_ENTITY_ID", "PROVIDER_TYPE_ID", "PROVIDER_PARAMS", "RESPONSIBLE_ID", "START_TIME", "END_TIME",
    "LAST_UPDATED",
)  # fmt: skip
#: Columns of the sessions table, in file order.
SESSION_COLUMNS: Final = (
    "id", "chat_id", "line_id", "operator_id", "client_id", "connector", "user_code", "start", "end", "last_updated",
    "message_count", "activity_id",
)  # fmt: skip
#: Columns of the messages table: the sensor's record keys (``text`` is the raw text, BB-code kept).
MESSAGE_COLUMNS: Final = ("id", "chat_id", "session_id", "author_id", "author_type", "date", "text")


class WindowError(ValueError):
    """A bound of the window is missing, not a date, without a time zone, or not before the other."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"{name}: {problem}")


def parse_bound(value: Any, name: str) -> datetime:
    """A window bound as a time-zone-aware datetime (pendulum parses strings); naive values are refused."""
    import pendulum

    if value is None or (isinstance(value, str) and not value.strip()):
        raise WindowError(name, "is missing")
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = pendulum.parse(text, exact=True)  # type: ignore[assignment]
        except Exception:
            raise WindowError(name, f"{text[:60]!r} is not an ISO 8601 date and time") from None
        if not isinstance(parsed, datetime):
            raise WindowError(name, f"{text[:60]!r} is not a date and time")
        if not _has_zone(text):
            raise WindowError(name, f"{text[:60]!r} has no time zone; add one, e.g. +00:00 or Z")
    else:
        raise WindowError(name, f"has type {type(value).__name__}, expected a datetime or an ISO 8601 string")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise WindowError(name, "has no time zone")
    return parsed


def _has_zone(text: str) -> bool:
    tail = text[10:] if len(text) > 10 else ""
    return tail.endswith(("Z", "z")) or "+" in tail or tail.count("-") >= 1


def parse_window(start: Any, end: Any) -> tuple[datetime, datetime]:
    """``(start, end)`` of a half-open window; ``start`` must be before ``end``."""
    begin, finish = parse_bound(start, "start"), parse_bound(end, "end")
    if not begin < finish:
        raise WindowError("end", f"{finish.isoformat()} is not after start {begin.isoformat()}")
    return begin, finish


def session_filter(start: datetime, end: datetime) -> dict[str, Any]:
    """The ``crm.activity.list`` filter of the sessions that changed in ``[start, end)``."""
    return {"PROVIDER_ID": PROVIDER_ID, ">=LAST_UPDATED": start.isoformat(), "<LAST_UPDATED": end.isoformat()}


def parse_user_code(code: Any) -> dict[str, Any]:
    """``connector|line|connector's chat|client`` (an ``imol|`` prefix is dropped) as named parts; ``{}`` if not."""
    if not isinstance(code, str):
        return {}
    parts = code.strip().removeprefix("imol|").split("|")
    if len(parts) != 4:
        return {}
    connector, line, chat, client = parts
    return {
        "connector": connector,
        "line_id": int(line) if line.isdigit() else None,
        "connector_chat": chat,
        "client_id": int(client) if client.isdigit() else None,
        "user_code": "|".join(parts),
    }


def provider_params(value: Any) -> Mapping[str, Any]:
    """``PROVIDER_PARAMS`` as a mapping: an object, a JSON string of one, or ``[]`` (PHP's empty map)."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, Mapping) else {}
    return {}


def iso_date(value: Any) -> str | None:
    """A portal date as time-zone-aware ISO 8601 (parsed with pendulum, its offset kept); ``None`` when empty."""
    import pendulum

    if value is None or value is False or (isinstance(value, str) and not value.strip()):
        return None
    try:
        parsed = pendulum.parse(str(value).strip())
    except Exception:
        raise HistoryPayloadError(f"date {str(value)[:40]!r} is not ISO 8601") from None
    if not isinstance(parsed, datetime):
        raise HistoryPayloadError(f"date {str(value)[:40]!r} is not a date and time")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=pendulum.UTC)
    return parsed.isoformat()


def session_row(activity: Mapping[str, Any]) -> dict[str, Any]:
    """A sessions-table row from an ``IMOPENLINES_SESSION`` activity (``chat_id`` and ``message_count`` unset)."""
    code = parse_user_code(provider_params(activity.get("PROVIDER_PARAMS")).get("USER_CODE"))
    line = _payload_int(activity.get("PROVIDER_TYPE_ID"), "PROVIDER_TYPE_ID") if _digits(activity) else None
    return {
        "id": _payload_int(activity.get("ASSOCIATED_ENTITY_ID"), "ASSOCIATED_ENTITY_ID"),
        "chat_id": None,
        "line_id": line if line is not None else code.get("line_id"),
        "operator_id": _payload_int(activity.get("RESPONSIBLE_ID"), "RESPONSIBLE_ID"),
        "client_id": code.get("client_id"),
        "connector": code.get("connector"),
        "user_code": code.get("user_code"),
        "start": iso_date(activity.get("START_TIME")),
        "end": iso_date(activity.get("END_TIME")),
        "last_updated": iso_date(activity.get("LAST_UPDATED")),
        "message_count": 0,
        "activity_id": _payload_int(activity.get("ID"), "ID"),
    }


def _digits(activity: Mapping[str, Any]) -> bool:
    value = activity.get("PROVIDER_TYPE_ID")
    return isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit())


def scope_error(method: str) -> Exception:
    """The error for a credential without the ``crm`` scope."""
    from airflow_provider_bitrix24.client.errors import Bitrix24PermissionError

    return Bitrix24PermissionError(
        "insufficient_scope",
        "finding open-line sessions reads crm.activity.list, which needs the 'crm' scope: add 'crm' to the "
        "webhook's or the application's permissions",
        method=method,
    )


def iter_sessions(client: Bitrix24Client, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """
    The sessions that changed in ``[start, end)``, ascending by activity id, as sessions-table rows.

    :raises Bitrix24PermissionError: ``insufficient_scope`` naming the ``crm`` scope, at the first request.
    """
    from airflow_provider_bitrix24.client.errors import Bitrix24Error

    params = {"filter": session_filter(start, end), "select": list(SELECT)}
    rows = client.iter_list(ACTIVITY_METHOD, params)
    seen: set[int] = set()
    while True:
        try:
            activity = next(rows)
        except StopIteration:
            return
        except Bitrix24Error as exc:
            if exc.code.lower() == "insufficient_scope":
                raise scope_error(ACTIVITY_METHOD) from None
            raise
        row = session_row(activity)
        if row["id"] is not None and row["id"] not in seen:
            seen.add(row["id"])
            yield row


def read_histories(
    client: Bitrix24Client, sessions: Sequence[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[BatchItem]]:
    """
    Read the histories of ``sessions`` (rows of :func:`iter_sessions`) as the sensor reads them: through ``batch``,
    50 to a request, several requests in flight under the client's limiter and operating-time budget. Fills each
    row's ``chat_id`` and ``message_count``.

    :return: The message records (ascending by session, then id; dates as ISO 8601) and the failed items.
    """
    items = client.batch([(HISTORY_METHOD, {"SESSION_ID": row["id"]}) for row in sessions])
    messages: list[dict[str, Any]] = []
    failed: list[BatchItem] = []
    for row, item in zip(sessions, items, strict=True):
        if item.error is not None:
            failed.append(item)
            continue
        records = extract_messages(item.result)
        result = item.result if isinstance(item.result, Mapping) else {}
        row["chat_id"] = _payload_int(result.get("chatId"), "chatId")
        row["message_count"] = len(records)
        for record in records:
            record["date"] = iso_date(record["date"])
            messages.append({name: record[name] for name in MESSAGE_COLUMNS})
    return messages, failed
