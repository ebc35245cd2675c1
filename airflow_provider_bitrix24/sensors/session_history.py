"""Sensor that waits for messages in an open-line session's history."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
from collections.abc import Iterable, Sequence
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
    extract_messages,
    history_query,
    unreadable_answer,
)
from airflow_provider_bitrix24.validation import positive_int
from airflow_provider_bitrix24.version_compat import variable_classes

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


#: Airflow Variables holding what a reschedule-mode wait has read between its pokes (message ids only).
STATE_VARIABLE_PREFIX = "bitrix24_history_wait__"
_STATE_DESCRIPTION = (
    "Progress of a Bitrix24 SessionHistorySensor in reschedule mode (ids of the messages read and matched); "
    "deleted when the wait ends"
)


class _ReadUpTo(set[int]):
    """The ids a resumed wait has read: every id up to ``last`` (read by earlier pokes), and those added since."""

    def __init__(self, last: int, count: int) -> None:
        super().__init__()
        self.last = last
        self.before = count

    def __contains__(self, item: object) -> bool:
        return (isinstance(item, int) and item <= self.last) or super().__contains__(item)

    def __len__(self) -> int:
        return self.before + super().__len__()

    def newest(self) -> int:
        return max(self.last, max(self, default=0))


class _Except:
    """Every id but ``ids``: what to skip when only the messages an earlier poke matched are wanted."""

    def __init__(self, ids: Iterable[int]) -> None:
        self.ids = frozenset(ids)

    def __contains__(self, item: object) -> bool:
        return item not in self.ids


class _ResumedMatcher(HistoryMatcher):
    """
    A :class:`HistoryMatcher` that goes on from what earlier pokes of the same wait kept (reschedule mode: each
    poke is a new process): messages up to ``last`` are not read again, and the ``matched`` ones are taken from
    the next answer as they are, without searching them again.
    """

    def __init__(self, history_filter: HistoryFilter, last: int, read: int, matched: Iterable[int]) -> None:
        super().__init__(history_filter)
        self._seen = _ReadUpTo(last, read)
        self._pending = set(matched)

    def feed(self, result: Any, *, deadline: float | None = None) -> list[dict[str, Any]]:
        if self._pending:
            for record in extract_messages(result, skip=_Except(self._pending)):
                self._matches[record["id"]] = record
            self._pending = set()  # a matched message the session no longer holds is dropped, as a full read would
        return super().feed(result, deadline=deadline)


def _newest(matcher: HistoryMatcher) -> int:
    seen = matcher._seen
    return seen.newest() if isinstance(seen, _ReadUpTo) else max(seen, default=0)


def _rescheduled(exc: BaseException) -> bool:
    """Whether ``exc`` is the sensor asking to be rescheduled (the wait goes on)."""
    classes: list[type[BaseException]] = []
    for module in ("airflow.sdk.exceptions", "airflow.exceptions"):  # Airflow 3, Airflow 2
        with contextlib.suppress(ImportError, AttributeError):
            classes.append(importlib.import_module(module).AirflowRescheduleException)
    return isinstance(exc, tuple(classes))


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
            if not self.reschedule:
                return super().execute(context)
            # Each poke is a new process: go on from what the earlier pokes of this wait kept.
            self._matcher = self._resume(context, history_filter)
            try:
                result = super().execute(context)
            except Exception as exc:
                if not _rescheduled(exc):
                    self._forget(context)
                raise
            self._forget(context)
            return result
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
        if self.reschedule and not self.deferrable and matcher.seen != read_before:
            self._keep(context, matcher)
        return PokeReturnValue(False)

    # -- reschedule mode: what the earlier pokes of a wait read

    def _state_key(self, context: Context) -> str | None:
        ti = context.get("ti") if hasattr(context, "get") else None  # Airflow 2's Context is no dict
        if ti is None:
            return None
        where = f"{ti.dag_id}|{ti.run_id}|{ti.task_id}|{getattr(ti, 'map_index', -1)}"
        return STATE_VARIABLE_PREFIX + hashlib.sha256(where.encode()).hexdigest()[:40]

    def _state_fingerprint(self, history_filter: HistoryFilter) -> str:
        session_id, chat_id, _ = self._arguments
        what = json.dumps([session_id, chat_id, history_filter.to_kwargs()], sort_keys=True, default=str)
        return hashlib.sha256(what.encode()).hexdigest()[:16]

    def _resume(self, context: Context, history_filter: HistoryFilter) -> HistoryMatcher:
        """The matcher of this wait, going on from the state the earlier pokes kept, if any."""
        key = self._state_key(context)
        if key is None:
            return HistoryMatcher(history_filter)
        raw = None
        for variable in variable_classes():
            try:
                raw = variable.get(key)
                break
            except Exception:  # missing, or not reachable from this kind of process: try the next way
                continue
        try:
            state = json.loads(raw) if isinstance(raw, str) else None
            if not isinstance(state, dict) or state.get("filter") != self._state_fingerprint(history_filter):
                return HistoryMatcher(history_filter)
            last, read, matched = int(state["last"]), int(state["read"]), [int(i) for i in state["matched"]]
        except (ValueError, TypeError, KeyError):
            self.log.warning("Variable %s does not hold the state of this wait; reading the session afresh", key)
            return HistoryMatcher(history_filter)
        self.log.info("Going on from the earlier pokes: %d message(s) read, %d matching", read, len(matched))
        return _ResumedMatcher(history_filter, last, read, matched)

    def _keep(self, context: Context, matcher: HistoryMatcher) -> None:
        """Keep what this poke read for the next one (ids only); a failure only costs the next poke a full read."""
        key = self._state_key(context)
        if key is None:
            return
        state = {
            "filter": self._state_fingerprint(matcher.filter),
            "last": _newest(matcher),
            "read": matcher.seen,
            "matched": [m["id"] for m in matcher.matches],
        }
        failure: Exception | None = None
        for variable in variable_classes():
            try:
                variable.set(key, json.dumps(state), description=_STATE_DESCRIPTION)
                return
            except Exception as exc:
                failure = exc
        self.log.warning(
            "Could not keep what this poke read in Variable %s (%s); the next poke reads it all", key, failure
        )

    def _forget(self, context: Context) -> None:
        key = self._state_key(context)
        if key is None:
            return
        for variable in variable_classes():
            try:
                variable.delete(key)
                return
            except Exception:
                continue

    # -- deferrable

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Turn the trigger's event into the same outcome as a poke would have had."""
        from airflow_provider_bitrix24.failures import to_airflow
        from airflow_provider_bitrix24.triggers.events import decode_event

        if not isinstance(event, dict):
            raise AirflowException(f"The trigger ended without an event ({event!r})")
        outcome = decode_event(event)
        if outcome.messages is not None:
            messages = outcome.messages
            self.log.info("Found %d matching message(s): ids %s", len(messages), [m.get("id") for m in messages])
            return messages
        if outcome.error is not None:
            raise to_airflow(outcome.error)
        if outcome.retryable is False:
            raise AirflowFailException(outcome.failure)
        raise AirflowException(f"Waiting for the session history failed: {outcome.failure}")
