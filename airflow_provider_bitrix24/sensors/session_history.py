"""Sensor that waits for messages in an open-line session's history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_bitrix24.history import (
    METHOD,
    HistoryArgumentError,
    HistoryFilter,
    HistoryMatcher,
    history_query,
    unreadable_answer,
)
from airflow_provider_bitrix24.validation import positive_int

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class SessionHistorySensor(BaseSensorOperator):
    r"""
    Wait until an open-line session holds the messages you care about (``imopenlines.session.history.get``).

    Messages are filtered by id (``after_message_id``), author type and a regular expression on the text; the
    sensor succeeds once at least ``min_messages`` of them are in the session, and pushes them to XCom, ascending
    by id, as ``{"id", "chat_id", "session_id", "author_id", "author_type", "date", "text"}`` dicts, ready for
    ``SaveQuickAnswerOperator(message_id=sensor.output)``. Each message is read once per wait (per task try in
    poke mode): later polls only look at the messages that are new.

    ``text_pattern`` is a regular expression in `RE2 syntax <https://github.com/google/re2/wiki/Syntax>`_, matched
    by RE2 in time linear in the text, so that no customer message can make a poll hang (as ``(a+)+$`` does with
    Python's ``re``). It is searched (like ``re.search``) in each message's text (BB-code, e.g. ``[b]...[/b]``),
    in its first 20,000 characters; a pattern of more than 1,000 RE2 instructions is searched in fewer (20,000,000
    divided by its size; ``[\p{L}\p{N}_]+`` has 1,348), so that no search takes more than a few tens of
    milliseconds, and one of more than 20,000 instructions is refused. Most of Python's syntax works: classes,
    ``\d``, ``\s``, ``\b``, anchors, lazy quantifiers such as ``*?``, ``{n,m}`` (up to 1000), groups,
    ``(?P<name>...)``, ``(?:...)``, the flags ``(?i)``, ``(?m)`` and ``(?s)``, and Unicode classes such as
    ``\p{L}`` or ``\p{Cyrillic}``. Differences from Python: ``\w``, ``\d``, ``\s`` and ``\b`` are ASCII-only
    (write ``[\p{L}\p{N}_]`` for any letter or digit), ``$`` without ``(?m)`` matches only at the very end (there
    is no ``\Z``; use ``\z``), and there are no backreferences (``\1``), lookahead or lookbehind (``(?=``,
    ``(?!``, ``(?<=``, ``(?<!``), atomic groups, possessive quantifiers, conditionals, ``(?x)`` or ``(?#...)``.
    Such a pattern (or one too large) fails the task before any request, in every mode, with an error naming
    ``text_pattern``.

    Permanent errors (no access to the session, unknown session, bad credential, missing scope) fail the task at
    once, without retries; transient errors (rate limit, portal or network hiccups) count as "not yet" and are
    logged, so they never end a long wait. With ``deferrable=True`` the wait runs in the triggerer, where the
    waits of all sensors on one portal share ``batch`` requests under the portal's rate limit.

    .. seealso::
        https://apidocs.bitrix24.com/api-reference/imopenlines/openlines/sessions/imopenlines-session-history-get.html

    :param session_id: The session to watch; wins over ``chat_id``. (templated)
    :param chat_id: The open-line chat whose latest session is watched, when ``session_id`` is not given: each
        poll reads the session the portal calls latest, so a session opened during the wait is followed. Portals on
        older imopenlines versions ignore ``CHAT_ID`` in ``imopenlines.session.history.get`` and answer
        ``ACCESS_DENIED``, which fails the sensor at once; there, pass ``session_id`` (the sixth field of
        ``imopenlines.dialog.get``'s ``entity_data_1``, which is ``0`` once the chat has no active session).
        (templated)
    :param after_message_id: Only messages with a greater id count. (templated)
    :param author: Whose messages count: ``"any"``, ``"client"``, ``"operator"``, ``"bot"``, ``"system"``, or a
        list of these.
    :param text_pattern: A regular expression in RE2 syntax (see above) searched in the message text (BB-code);
        a bad pattern fails the task before any request. (templated)
    :param min_messages: How many matching messages end the wait.
    :param deferrable: Wait in the triggerer instead of a worker slot; the trigger polls every ``poke_interval``
        seconds (``exponential_backoff`` applies to poke and reschedule modes only).
    :param bitrix24_conn_id: The Bitrix24 connection. (templated)
    :return: The matching messages, ascending by id.
    """

    template_fields: Sequence[str] = ("session_id", "chat_id", "after_message_id", "text_pattern", "bitrix24_conn_id")
    ui_color = "#2fc6f6"

    def __init__(
        self,
        *,
        session_id: int | str | None = None,
        chat_id: int | str | None = None,
        after_message_id: int | str | None = None,
        author: str | Sequence[str] = "any",
        text_pattern: str | None = None,
        min_messages: int = 1,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        bitrix24_conn_id: str = "bitrix24_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session_id = session_id
        self.chat_id = chat_id
        self.after_message_id = after_message_id
        self.author = author
        self.text_pattern = text_pattern
        self.min_messages = min_messages
        self.deferrable = deferrable
        self.bitrix24_conn_id = bitrix24_conn_id
        self._matcher: HistoryMatcher | None = None

    @cached_property
    def hook(self) -> Bitrix24Hook:
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        return Bitrix24Hook(bitrix24_conn_id=self.bitrix24_conn_id)

    # -- arguments

    def _resolve(self) -> tuple[int | None, int | None, HistoryFilter]:
        """Validate the rendered arguments; fail naming the first bad one."""
        session_id = None if _unset(self.session_id) else positive_int(self.session_id, "session_id")
        chat_id = None if _unset(self.chat_id) else positive_int(self.chat_id, "chat_id")
        if session_id is None and chat_id is None:
            raise AirflowFailException("session_id: session_id or chat_id is required")
        try:
            history_filter = HistoryFilter.build(
                after_message_id=self.after_message_id,
                author=self.author,
                text_pattern=self.text_pattern,
                min_messages=self.min_messages,
            )
        except HistoryArgumentError as err:
            raise AirflowFailException(str(err)) from None
        return session_id, chat_id, history_filter

    @cached_property
    def _arguments(self) -> tuple[int | None, int | None, HistoryFilter]:
        return self._resolve()

    def _fail(self, exc: BaseException) -> NoReturn:
        """Raise ``exc``, or skip instead when ``soft_fail`` / ``never_fail`` ask for it (as sensors do)."""
        if isinstance(exc, AirflowException) and (self.soft_fail or getattr(self, "never_fail", False)):
            raise AirflowSkipException(f"Skipping because soft_fail/never_fail is set: {exc}") from exc
        raise exc

    # -- poke / reschedule

    def execute(self, context: Context) -> Any:
        try:
            session_id, chat_id, history_filter = self._arguments
        except AirflowFailException as exc:
            self._fail(exc)
        where = f"session {session_id}" if session_id is not None else f"the latest session of chat {chat_id}"
        self.log.info("Waiting for %s in %s", history_filter.describe(), where)
        self._matcher = HistoryMatcher(history_filter)  # one per task try: each poke reads only new messages
        if not self.deferrable:
            return super().execute(context)
        try:
            first = self.poke(context)
        except AirflowFailException as exc:
            self._fail(exc)
        if first.is_done:
            return first.xcom_value
        from airflow_provider_bitrix24.triggers.session_history import SessionHistoryTrigger

        kwargs = history_filter.to_kwargs()
        self.defer(
            trigger=SessionHistoryTrigger(
                bitrix24_conn_id=self.bitrix24_conn_id,
                session_id=session_id,
                chat_id=chat_id,
                after_message_id=kwargs["after_message_id"],
                authors=kwargs["authors"],
                text_pattern=kwargs["text_pattern"],
                min_messages=kwargs["min_messages"],
                poll_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_provider_bitrix24.client.errors import Bitrix24Error
        from airflow_provider_bitrix24.failures import to_airflow

        session_id, chat_id, history_filter = self._arguments
        try:
            result = self.hook.call(METHOD, history_query(session_id, chat_id))
        except Bitrix24Error as err:
            if err.retryable:
                self.log.warning("Could not read the session history this time (%s); will try again", err)
                return PokeReturnValue(False)
            raise to_airflow(err) from None
        matcher = self._matcher
        if matcher is None or matcher.filter is not history_filter:
            matcher = self._matcher = HistoryMatcher(history_filter)
        read_before = matcher.seen
        try:
            matches = matcher.feed(result)
        except Exception as exc:
            where = f"session {session_id}" if session_id is not None else f"chat {chat_id}"
            failure = unreadable_answer(exc, where)
            if failure.retryable:
                self.log.warning("Could not read the session history this time (%s); will try again", failure)
                return PokeReturnValue(False)
            raise to_airflow(failure) from None
        self.log.info(
            "Session %s: %d new message(s), %d matching so far, %d needed",
            session_id if session_id is not None else f"of chat {chat_id}",
            matcher.seen - read_before,
            len(matches),
            history_filter.min_messages,
        )
        if history_filter.is_met(matches):
            return PokeReturnValue(True, xcom_value=matches)
        return PokeReturnValue(False)

    # -- deferrable

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Turn the trigger's event into the same outcome as a poke would have had."""
        from airflow_provider_bitrix24.client.errors import Bitrix24Error
        from airflow_provider_bitrix24.failures import to_airflow

        if not isinstance(event, dict):
            raise AirflowException(f"The trigger ended without an event ({event!r})")
        if event.get("status") == "success":
            messages: list[dict[str, Any]] = list(event.get("messages") or [])
            self.log.info("Found %d matching message(s): ids %s", len(messages), [m.get("id") for m in messages])
            return messages
        code = str(event.get("code") or "UNKNOWN")
        message = str(event.get("message") or code)
        if "description" in event:  # an error answered by the portal or raised by the client
            raise to_airflow(
                Bitrix24Error(
                    code,
                    str(event.get("description") or ""),
                    status=event.get("http_status"),
                    method=event.get("method"),
                    retryable=bool(event.get("retryable")),
                )
            )
        if event.get("retryable") is False:
            raise AirflowFailException(message)
        raise AirflowException(f"Waiting for the session history failed: {message}")
