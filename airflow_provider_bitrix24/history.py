"""
Read and filter the answer of ``imopenlines.session.history.get``.

Plain Python, shared by :class:`~airflow_provider_bitrix24.sensors.session_history.SessionHistorySensor` (poke and
reschedule modes) and :class:`~airflow_provider_bitrix24.triggers.session_history.SessionHistoryTrigger`
(deferrable mode), so that every mode reads the same payload the same way.

:func:`extract_messages` turns the portal's answer into one record per message::

    {"id": 85851, "chat_id": 1763, "session_id": 321, "author_id": 103, "author_type": "operator",
     "date": "2026-03-11T13:12:46+01:00", "text": "Open the task card and click Observers"}

and :class:`HistoryFilter` keeps the records a wait is about, ascending by id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

METHOD: Final = "imopenlines.session.history.get"

#: Who can write in an open-line session.
AUTHOR_TYPES: Final = ("client", "operator", "bot", "system")
ANY_AUTHOR: Final = "any"


class HistoryArgumentError(ValueError):
    """An argument of a history wait is invalid; the message starts with the argument's name."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"{name}: {problem}")


# --------------------------------------------------------------------------- payload


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _truthy(value: Any) -> bool:
    return value is True or value == 1 or (isinstance(value, str) and value.strip().upper() in ("Y", "TRUE", "1"))


def _values(section: Any) -> list[tuple[str, Any]]:
    """The entries of a result section; PHP sends an empty map as ``[]`` and a 0..n-1 map as a list."""
    if isinstance(section, Mapping):
        return [(str(key), value) for key, value in section.items()]
    if isinstance(section, list):
        return [(str(index), value) for index, value in enumerate(section)]
    return []


def _users(section: Any) -> dict[int, Mapping[str, Any]]:
    users: dict[int, Mapping[str, Any]] = {}
    for key, item in _values(section):
        if isinstance(item, Mapping):
            user_id = _as_int(item.get("id"))
            users[user_id if user_id is not None else _as_int(key) or 0] = item
    return users


def classify_author(author_id: int, user: Mapping[str, Any] | None) -> str:
    """
    Tell who wrote a message.

    Sender ``0`` is the system; a user with ``connector: true`` is the client (an external contact); a user with
    ``bot: true`` is a chat bot; any other sender is an operator (an employee).
    """
    if author_id == 0:
        return "system"
    if user is not None and _truthy(user.get("connector")):
        return "client"
    if user is not None and _truthy(user.get("bot")):
        return "bot"
    return "operator"


def extract_messages(result: Any) -> list[dict[str, Any]]:
    """
    The messages of a ``imopenlines.session.history.get`` result, ascending by id.

    Ids come as strings and become ints; ``message`` and ``users`` may be ``[]`` when empty. The session id is
    the one the portal actually used (``sessionId``), which matters when only a chat id was given.
    """
    if not isinstance(result, Mapping):
        return []
    session_id = _as_int(result.get("sessionId"))
    chat_id = _as_int(result.get("chatId"))
    users = _users(result.get("users"))
    records: dict[int, dict[str, Any]] = {}
    for key, item in _values(result.get("message")):
        if not isinstance(item, Mapping):
            continue
        message_id = _as_int(item.get("id"))
        if message_id is None:
            message_id = _as_int(key)
        if message_id is None:
            continue
        author_id = _as_int(item.get("senderid", item.get("senderId"))) or 0
        message_chat = _as_int(item.get("chatid", item.get("chatId")))
        records[message_id] = {
            "id": message_id,
            "chat_id": message_chat if message_chat is not None else chat_id,
            "session_id": session_id,
            "author_id": author_id,
            "author_type": classify_author(author_id, users.get(author_id)),
            "date": str(item.get("date") or ""),
            "text": str(item.get("text") or ""),
        }
    return [records[key] for key in sorted(records)]


# --------------------------------------------------------------------------- filter


def parse_authors(author: str | Iterable[str]) -> frozenset[str]:
    """Normalise ``author`` (``"any"``, one type, or a list of types) into a set of author types."""
    items = [author] if isinstance(author, str) else list(author) if isinstance(author, Iterable) else [author]
    if not items:
        raise HistoryArgumentError("author", f"is empty; use {ANY_AUTHOR!r} or some of {', '.join(AUTHOR_TYPES)}")
    kinds: set[str] = set()
    for item in items:
        name = item.strip().lower() if isinstance(item, str) else item
        if name == ANY_AUTHOR:
            kinds.update(AUTHOR_TYPES)
        elif name in AUTHOR_TYPES:
            kinds.add(name)
        else:
            raise HistoryArgumentError(
                "author", f"{item!r} is not an author type; use {ANY_AUTHOR!r} or some of {', '.join(AUTHOR_TYPES)}"
            )
    return frozenset(kinds)


def parse_after_message_id(value: Any) -> int | None:
    """``None`` (or an empty string) for "every message", else a non-negative message id."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = _as_int(value)
    if number is None and isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None or number < 0:
        raise HistoryArgumentError("after_message_id", f"{value!r} is not a message id")
    return number


@dataclass(frozen=True)
class HistoryFilter:
    """
    Which messages of a session a wait is about, and how many it needs.

    Build it with :meth:`build`, which validates the arguments and compiles the pattern.

    :param after_message_id: Only messages with a greater id count; ``None`` counts every message.
    :param authors: Author types that count (see :data:`AUTHOR_TYPES`).
    :param pattern: A regular expression searched in the message text; ``None`` accepts any text.
    :param min_messages: How many matching messages end the wait.
    """

    after_message_id: int | None = None
    authors: frozenset[str] = frozenset(AUTHOR_TYPES)
    pattern: re.Pattern[str] | None = None
    min_messages: int = 1

    @classmethod
    def build(
        cls,
        *,
        after_message_id: Any = None,
        author: str | Iterable[str] = ANY_AUTHOR,
        text_pattern: str | None = None,
        min_messages: Any = 1,
    ) -> HistoryFilter:
        """
        Validate the arguments of a wait.

        :raises HistoryArgumentError: naming the argument, e.g. ``text_pattern: '(' is not a valid regular
            expression (missing ), unterminated subpattern at position 0)``.
        """
        pattern = None
        if text_pattern is not None and text_pattern != "":
            if not isinstance(text_pattern, str):
                raise HistoryArgumentError("text_pattern", f"{text_pattern!r} is not a string")
            try:
                pattern = re.compile(text_pattern)
            except re.error as exc:
                raise HistoryArgumentError(
                    "text_pattern", f"{text_pattern!r} is not a valid regular expression ({exc})"
                ) from None
        count = _as_int(min_messages)
        if count is None or count < 1:
            raise HistoryArgumentError("min_messages", f"{min_messages!r} is not a positive integer")
        return cls(
            after_message_id=parse_after_message_id(after_message_id),
            authors=parse_authors(author),
            pattern=pattern,
            min_messages=count,
        )

    def accepts(self, record: Mapping[str, Any]) -> bool:
        """Whether one message record counts."""
        if self.after_message_id is not None and record["id"] <= self.after_message_id:
            return False
        if record["author_type"] not in self.authors:
            return False
        return self.pattern is None or self.pattern.search(record["text"]) is not None

    def match(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The records that count, ascending by id."""
        return sorted((dict(r) for r in records if self.accepts(r)), key=lambda r: r["id"])

    def is_met(self, matches: list[dict[str, Any]]) -> bool:
        """Whether ``matches`` (from :meth:`match`) end the wait."""
        return len(matches) >= self.min_messages

    def describe(self) -> str:
        """One line for logs: what the wait is for."""
        who = ANY_AUTHOR if self.authors == frozenset(AUTHOR_TYPES) else "/".join(sorted(self.authors))
        parts = [f"{self.min_messages} message(s) by {who}"]
        if self.after_message_id is not None:
            parts.append(f"after id {self.after_message_id}")
        if self.pattern is not None:
            parts.append(f"matching {self.pattern.pattern!r}")
        return " ".join(parts)

    def to_kwargs(self) -> dict[str, Any]:
        """Plain, JSON-safe values that rebuild this filter through :meth:`build`."""
        return {
            "after_message_id": self.after_message_id,
            "authors": sorted(self.authors),
            "text_pattern": self.pattern.pattern if self.pattern is not None else None,
            "min_messages": self.min_messages,
        }


def history_query(session_id: int | None, chat_id: int | None) -> dict[str, int]:
    """
    The parameters of one history call: ``SESSION_ID`` when known (the portal prefers it), else ``CHAT_ID``
    (the portal then reads the chat's latest session).
    """
    if session_id is not None:
        return {"SESSION_ID": session_id}
    if chat_id is not None:
        return {"CHAT_ID": chat_id}
    raise HistoryArgumentError("session_id", "session_id or chat_id is required")
