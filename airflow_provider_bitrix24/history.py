"""
Read and filter the answer of ``imopenlines.session.history.get``.

Plain Python, shared by :class:`~airflow_provider_bitrix24.sensors.session_history.SessionHistorySensor` (poke and
reschedule modes) and :class:`~airflow_provider_bitrix24.triggers.session_history.SessionHistoryTrigger`
(deferrable mode), so that every mode reads the same payload the same way.

:func:`extract_messages` turns the portal's answer into one record per message::

    {"id": 85851, "chat_id": 1763, "session_id": 321, "author_id": 103, "author_type": "operator",
     "date": "2026-03-11T13:12:46+01:00", "text": "Open the task card and click Observers"}

:class:`HistoryFilter` says which records a wait is about, and :class:`HistoryMatcher` applies it to the successive
answers of one wait, reading each message once.

Text patterns use RE2 syntax and are matched by RE2 (``google-re2``), in time linear in the text: no message can
make a search backtrack for minutes. A pattern RE2 refuses (backreferences, lookaround...) is an argument error.
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from airflow_provider_bitrix24.client.coerce import MAX_ID, OUT_OF_RANGE, IntegerError, cut, read_id, show, to_int

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.errors import Bitrix24ResponseError

#: ``MAX_ID``, ``IntegerError``, ``cut``, ``show`` and ``to_int`` live in :mod:`airflow_provider_bitrix24.client.coerce`.
__all__ = [
    "ANY_AUTHOR",
    "AUTHOR_TYPES",
    "MATCH_SECONDS",
    "MAX_ID",
    "MAX_PATTERN_SIZE",
    "MAX_TEXT_CHARS",
    "METHOD",
    "RE2_SYNTAX_HINT",
    "SEARCH_WORK",
    "HistoryArgumentError",
    "HistoryFilter",
    "HistoryMatcher",
    "HistoryPayloadError",
    "IntegerError",
    "Regex",
    "classify_author",
    "compile_pattern",
    "cut",
    "extract_messages",
    "history_query",
    "parse_after_message_id",
    "parse_authors",
    "parse_min_messages",
    "show",
    "to_int",
    "unreadable_answer",
]

METHOD: Final = "imopenlines.session.history.get"

#: Who can write in an open-line session.
AUTHOR_TYPES: Final = ("client", "operator", "bot", "system")
ANY_AUTHOR: Final = "any"

#: The characters of each message that ``text_pattern`` is searched in: the first 20,000...
MAX_TEXT_CHARS: Final = 20_000
#: ...or fewer for a large pattern: a search costs at most the pattern's size (in RE2 instructions) times the
#: characters searched, and that product is kept under this bound (some 50 ms at worst). ``(?i)order #\d+`` takes
#: about 15 instructions, ``[\p{L}\p{N}_]+`` about 1,350 (searched in 14,800 characters).
SEARCH_WORK: Final = 20_000_000
#: The largest ``text_pattern``, in RE2 instructions: at least 1,000 characters of each message are searched.
MAX_PATTERN_SIZE: Final = SEARCH_WORK // 1_000
#: The time one answer of a wait in the triggerer may spend on pattern searches (at least one message is searched
#: per answer); the messages left over are searched in the next answer.
MATCH_SECONDS: Final = 0.02

#: What RE2 leaves out of Python's syntax, for the error of a refused pattern.
RE2_SYNTAX_HINT: Final = (
    "text_pattern uses RE2 syntax (https://github.com/google/re2/wiki/Syntax), which matches in linear time and "
    "has no backreferences, lookahead or lookbehind, atomic groups, possessive quantifiers, conditionals, "
    "(?x) or (?#...)"
)


class HistoryArgumentError(ValueError):
    """An argument of a history wait is invalid; the message starts with the argument's name."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"{name}: {problem}")


class HistoryPayloadError(ValueError):
    """The portal's answer holds a value that cannot be read (an id that is not a plain integer, text that is not
    text)."""


# --------------------------------------------------------------------------- payload


def _payload_int(value: Any, what: str) -> int | None:
    """An id of the portal's answer: an int or a string of ASCII digits; ``None`` when absent or empty."""
    try:
        return read_id(value)
    except IntegerError as exc:
        raise HistoryPayloadError(f"{what} {show(value)} {exc}") from None


def _payload_text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or value is False:
        return ""
    if isinstance(value, int | float):
        return str(value)
    raise HistoryPayloadError(f"{what} is a {type(value).__name__}, not text")


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
            user_id = _payload_int(item.get("id"), "user id")
            if user_id is None:
                user_id = _payload_int(key, "user key")
            users[user_id or 0] = item
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


def extract_messages(result: Any, *, skip: Container[int] = frozenset()) -> list[dict[str, Any]]:
    """
    The messages of a ``imopenlines.session.history.get`` result, ascending by id.

    Ids come as strings and become ints; ``message`` and ``users`` may be ``[]`` when empty. The session id is
    the one the portal actually used (``sessionId``), which matters when only a chat id was given. Entries of
    another shape than the portal's are left out.

    :param skip: Ids of messages to leave out (the ones a :class:`HistoryMatcher` has read already).
    :raises HistoryPayloadError: for an id that is not a plain integer of the portal's range (``"²"``, ``"١٢"``,
        ``"-5"``, ``1e30``), or a text or date that is not text.
    """
    if not isinstance(result, Mapping):
        return []
    session_id = _payload_int(result.get("sessionId"), "sessionId")
    chat_id = _payload_int(result.get("chatId"), "chatId")
    users: dict[int, Mapping[str, Any]] | None = None
    records: dict[int, dict[str, Any]] = {}
    for key, item in _values(result.get("message")):
        if not isinstance(item, Mapping):
            continue
        message_id = _payload_int(item.get("id"), "message id")
        if message_id is None:
            message_id = _payload_int(key, "message key")
        if message_id is None or message_id in skip:
            continue
        if users is None:
            users = _users(result.get("users"))
        author_id = _payload_int(item.get("senderid", item.get("senderId")), f"sender of message {message_id}") or 0
        message_chat = _payload_int(item.get("chatid", item.get("chatId")), f"chat of message {message_id}")
        records[message_id] = {
            "id": message_id,
            "chat_id": message_chat if message_chat is not None else chat_id,
            "session_id": session_id,
            "author_id": author_id,
            "author_type": classify_author(author_id, users.get(author_id)),
            "date": _payload_text(item.get("date"), f"the date of message {message_id}"),
            "text": _payload_text(item.get("text"), f"the text of message {message_id}"),
        }
    return [records[key] for key in sorted(records)]


def unreadable_answer(exc: Exception, where: str) -> Bitrix24ResponseError:
    """
    The client error for a history answer that could not be read: permanent for a value the portal should never
    send (:class:`HistoryPayloadError`), retryable for anything else.
    """
    from airflow_provider_bitrix24.client.errors import Bitrix24ResponseError

    if isinstance(exc, HistoryPayloadError):
        return Bitrix24ResponseError(
            "INVALID_RESPONSE", f"the history of {where} cannot be read: {exc}", method=METHOD, retryable=False
        )
    try:
        detail = cut(str(exc), 200)
    except Exception:
        detail = "?"
    return Bitrix24ResponseError(
        "INVALID_RESPONSE",
        f"the history of {where} cannot be read ({type(exc).__name__}: {detail})",
        method=METHOD,
        retryable=True,
    )


# --------------------------------------------------------------------------- filter


class Regex(Protocol):
    """What the filter needs of a compiled RE2 pattern."""

    @property
    def programsize(self) -> int: ...

    def search(self, text: str) -> Any: ...


def compile_pattern(text_pattern: Any) -> Regex:
    """
    Compile ``text_pattern`` with RE2.

    :raises HistoryArgumentError: naming ``text_pattern``: not a string, not valid in RE2 syntax (which has no
        backreferences or lookaround), or larger than :data:`MAX_PATTERN_SIZE` RE2 instructions.
    """
    if not isinstance(text_pattern, str):
        raise HistoryArgumentError("text_pattern", f"{show(text_pattern)} is not a string")
    import re2  # loaded when a wait starts, not when a DAG is parsed

    options = re2.Options()
    options.log_errors = False
    options.never_capture = True  # whether it occurs is all that counts; groups would cost a second pass
    try:
        regex = re2.compile(text_pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise HistoryArgumentError(
            "text_pattern",
            f"{show(text_pattern)} is not a valid regular expression in RE2 syntax ({cut(str(reason), 120)}); "
            f"{RE2_SYNTAX_HINT}",
        ) from None
    except UnicodeError:
        raise HistoryArgumentError("text_pattern", f"{show(text_pattern)} is not valid Unicode text") from None
    size = int(regex.programsize)
    if size > MAX_PATTERN_SIZE:
        raise HistoryArgumentError(
            "text_pattern",
            f"{show(text_pattern)} is too large: it compiles to {size} RE2 instructions and at most "
            f"{MAX_PATTERN_SIZE} are allowed; wait for a simpler pattern and filter the messages downstream",
        )
    return regex  # type: ignore[no-any-return]


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
                "author",
                f"{show(item)} is not an author type; use {ANY_AUTHOR!r} or some of {', '.join(AUTHOR_TYPES)}",
            )
    return frozenset(kinds)


def parse_after_message_id(value: Any) -> int | None:
    """``None`` (or an empty string) for "every message", else a non-negative message id."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = to_int(value)
    except IntegerError as exc:
        raise HistoryArgumentError("after_message_id", f"{show(value)} is not a message id: it {exc}") from None
    if number < 0:
        raise HistoryArgumentError("after_message_id", f"{show(value)} is not a message id: it is negative")
    return number


def parse_min_messages(value: Any) -> int:
    """A positive number of messages."""
    try:
        number = None if isinstance(value, bool) else to_int(value)
    except IntegerError as exc:
        raise HistoryArgumentError("min_messages", f"{show(value)} is not a positive integer: it {exc}") from None
    if number is None or number < 1:
        raise HistoryArgumentError("min_messages", f"{show(value)} is not a positive integer")
    return number


@dataclass(frozen=True)
class HistoryFilter:
    """
    Which messages of a session a wait is about, and how many it needs.

    Build it with :meth:`build`, which validates the arguments; the pattern is compiled with RE2 on creation.

    :param after_message_id: Only messages with a greater id count; ``None`` counts every message.
    :param authors: Author types that count (see :data:`AUTHOR_TYPES`).
    :param text_pattern: A regular expression in RE2 syntax searched in the first :attr:`search_chars`
        characters of the message text; ``None`` accepts any text.
    :param min_messages: How many matching messages end the wait.
    """

    after_message_id: int | None = None
    authors: frozenset[str] = frozenset(AUTHOR_TYPES)
    text_pattern: str | None = None
    min_messages: int = 1
    #: The compiled ``text_pattern``.
    regex: Regex | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.text_pattern is not None and self.regex is None:
            object.__setattr__(self, "regex", compile_pattern(self.text_pattern))

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

        :raises HistoryArgumentError: naming the argument, e.g. ``text_pattern: '(a)\\1' is not a valid regular
            expression in RE2 syntax (invalid escape sequence: \\1); ...``.
        """
        regex = None if text_pattern is None or text_pattern == "" else compile_pattern(text_pattern)
        return cls(
            after_message_id=parse_after_message_id(after_message_id),
            authors=parse_authors(author),
            text_pattern=text_pattern if regex is not None else None,
            min_messages=parse_min_messages(min_messages),
            regex=regex,
        )

    def wants(self, record: Mapping[str, Any]) -> bool:
        """Whether a message counts by its id and author, before its text is looked at."""
        if self.after_message_id is not None and record["id"] <= self.after_message_id:
            return False
        return record["author_type"] in self.authors

    @property
    def search_chars(self) -> int:
        """How many characters of each message the pattern is searched in (see :data:`SEARCH_WORK`)."""
        size = self.regex.programsize if self.regex is not None else 1
        return max(1, min(MAX_TEXT_CHARS, SEARCH_WORK // max(1, size)))

    def search(self, text: str) -> bool:
        """Whether ``text_pattern`` occurs in the first :attr:`search_chars` characters of ``text``."""
        if self.regex is None:
            return True
        text = text[: self.search_chars]
        try:
            return self.regex.search(text) is not None
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON) has no UTF-8 form for RE2
            return self.regex.search(text.encode("utf-8", "replace").decode("utf-8")) is not None

    def accepts(self, record: Mapping[str, Any]) -> bool:
        """Whether one message record counts."""
        return self.wants(record) and self.search(record["text"])

    def match(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The records that count, ascending by id (every record is searched; see :class:`HistoryMatcher`)."""
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
        if self.text_pattern is not None:
            parts.append(f"matching {show(self.text_pattern)}")
        return " ".join(parts)

    def to_kwargs(self) -> dict[str, Any]:
        """Plain, JSON-safe values that rebuild this filter through :meth:`build`."""
        return {
            "after_message_id": self.after_message_id,
            "authors": sorted(self.authors),
            "text_pattern": self.text_pattern,
            "min_messages": self.min_messages,
        }


class HistoryMatcher:
    """
    Apply a :class:`HistoryFilter` to the successive answers of one wait, reading each message once.

    The matcher remembers the ids of the messages it has read and the matches so far: each answer costs only the
    messages not seen before, and a message that matched is never searched again. With a ``deadline``, pattern
    searches stop once it has passed (after at least one message); the messages left over stay new and are read
    from the next answer, in id order, so the matches are always those of the oldest messages read.

    :param history_filter: What the wait is for.
    """

    def __init__(self, history_filter: HistoryFilter) -> None:
        self.filter = history_filter
        self._seen: set[int] = set()
        self._matches: dict[int, dict[str, Any]] = {}
        #: New messages the last answer left unread, for the next one.
        self.backlog = 0
        #: Pattern searches run so far.
        self.searches = 0

    @property
    def seen(self) -> int:
        """How many messages have been read."""
        return len(self._seen)

    @property
    def matches(self) -> list[dict[str, Any]]:
        """The matches so far, ascending by id."""
        return [dict(self._matches[key]) for key in sorted(self._matches)]

    def feed(self, result: Any, *, deadline: float | None = None) -> list[dict[str, Any]]:
        """
        Read one answer of ``imopenlines.session.history.get``; return every match so far, ascending by id.

        :param deadline: A :func:`time.perf_counter` value after which no further message is searched in this
            answer; ``None`` searches every new message.
        :raises HistoryPayloadError: see :func:`extract_messages`.
        """
        new = extract_messages(result, skip=self._seen)
        wanted = self.filter
        searched = 0
        for read, record in enumerate(new):
            if wanted.wants(record):
                if wanted.regex is not None:
                    if searched and deadline is not None and time.perf_counter() > deadline:
                        self.backlog = len(new) - read
                        break
                    searched += 1
                    self.searches += 1
                if wanted.search(record["text"]):
                    self._matches[record["id"]] = record
            self._seen.add(record["id"])
        else:
            self.backlog = 0
        return self.matches

    def is_met(self) -> bool:
        """Whether the matches so far end the wait."""
        return len(self._matches) >= self.filter.min_messages


def _target_id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise HistoryArgumentError(name, f"{show(value)} is not a positive integer")
    if value > MAX_ID:
        raise HistoryArgumentError(name, f"{show(value)} {OUT_OF_RANGE}")
    return value


def history_query(session_id: int | None, chat_id: int | None) -> dict[str, int]:
    """
    The parameters of one history call: ``SESSION_ID`` when known (the portal prefers it), else ``CHAT_ID``
    (the portal then reads the chat's latest session).

    :raises HistoryArgumentError: when neither is given, or the one used is not a positive integer of the
        portal's range.
    """
    if session_id is not None:
        return {"SESSION_ID": _target_id(session_id, "session_id")}
    if chat_id is not None:
        return {"CHAT_ID": _target_id(chat_id, "chat_id")}
    raise HistoryArgumentError("session_id", "session_id or chat_id is required")
