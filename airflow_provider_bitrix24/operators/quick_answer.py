"""Operator that saves open-line chat messages to the portal's quick answers."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException, BaseOperator

from airflow_provider_bitrix24.client.coerce import show
from airflow_provider_bitrix24.validation import burst_share, positive_int

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_bitrix24.client.pipeline import Progress
    from airflow_provider_bitrix24.client.wire import BatchItem
    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

METHOD = "imopenlines.message.quick.save"
#: Errors that concern the chat or the credential, not one message: every other save would fail the same way.
CHAT_LEVEL_CODES = frozenset(
    {"CHAT_ID", "CHAT_TYPE", "ACCESS_DENIED", "insufficient_scope", "NO_AUTH_FOUND", "INVALID_CREDENTIALS"}
)


def message_ids(value: Any) -> list[int]:
    """
    Normalise ``message_id`` into a list of ids, in input order, without duplicates.

    Each item may be an int, a string of ASCII digits, or a message dict with an ``"id"`` key (what
    ``SessionHistorySensor`` pushes to XCom). A string holding a list (a rendered template) is parsed. Items are
    checked like ``chat_id`` (see :func:`~airflow_provider_bitrix24.validation.positive_int`).
    """
    if isinstance(value, str) and value.strip().startswith(("[", "(")):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise AirflowFailException(f"message_id: {show(value)} looks like a list but cannot be parsed") from None
    items = list(value) if isinstance(value, list | tuple) else [value]
    ids: list[int] = []
    seen: set[int] = set()
    for position, item in enumerate(items):
        name = f"message_id[{position}]" if isinstance(value, list | tuple) else "message_id"
        if isinstance(item, dict):
            if "id" not in item:
                keys = sorted(str(key) for key in item)
                raise AirflowFailException(f"{name}: a message dict needs an 'id' key, got keys {show(keys)}")
            item, name = item["id"], f"{name}['id']"
        number = positive_int(item, name)
        if number not in seen:
            seen.add(number)
            ids.append(number)
    return ids


class SaveQuickAnswerOperator(BaseOperator):
    """
    Save open-line chat messages to the portal's quick answers (``imopenlines.message.quick.save``).

    One message is saved with one call; many are sent through ``batch`` requests, several in flight at once as the
    portal's rate limit allows, spread over the requests that may go at once (a real portal processes a request's
    saves one after another, so 1,000 saves go as 50 requests of 20 when the bucket is empty, 10 to 50 saves per
    request), never the same message in two requests; ``max_burst_share`` bounds how much of the portal's burst
    one run takes at once. Duplicated ids are saved once. Messages that cannot be saved (``CANT_SAVE_QUICK_ANSWER``)
    do not stop the others: the task saves everything it can, then fails naming them. Errors about the chat or
    the credential fail the task at once, without retries; transient errors that outlast the client's retries
    leave the task to Airflow's ``retries`` (also when other messages failed permanently: the error then names
    both kinds), and a later try saves the rest without duplicating anything (the portal updates an answer that
    already holds the same message).

    .. seealso::
        https://apidocs.bitrix24.com/api-reference/imopenlines/openlines/messages/imopenlines-message-quick-save.html

    :param chat_id: The open-line chat the messages belong to. (templated)
    :param message_id: One message id, or a list of them: ints, numeric strings, or message dicts with an
        ``"id"`` key, such as the output of ``SessionHistorySensor``. (templated)
    :param bitrix24_conn_id: The Bitrix24 connection. (templated)
    :param max_burst_share: The share of the portal bucket's burst (above 0, at most 1) the run may have in flight
        at once, leaving the rest to other tasks and applications on the same portal: at most
        ``floor(burst x share)`` requests at once (25 of the standard plan's 50 with ``0.5``), and the saves are
        spread over no more requests than that. ``None`` (default): the whole burst, the fastest run.
    :return: The saved message ids as ints, in input order, without duplicates.
    """

    template_fields: Sequence[str] = ("chat_id", "message_id", "bitrix24_conn_id")
    template_fields_renderers = {"message_id": "py"}
    ui_color = "#2fc6f6"

    def __init__(
        self,
        *,
        chat_id: int | str,
        message_id: Any,
        bitrix24_conn_id: str = "bitrix24_default",
        max_burst_share: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.chat_id = chat_id
        self.message_id = message_id
        self.bitrix24_conn_id = bitrix24_conn_id
        self.max_burst_share = max_burst_share

    @cached_property
    def hook(self) -> Bitrix24Hook:
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        return Bitrix24Hook(bitrix24_conn_id=self.bitrix24_conn_id)

    def execute(self, context: Context) -> list[int]:
        chat_id = positive_int(self.chat_id, "chat_id")
        ids = message_ids(self.message_id)
        share = burst_share(self.max_burst_share, "max_burst_share")
        if not ids:
            raise AirflowSkipException("Nothing to save: message_id is an empty list.")
        self.log.info("Saving %d message(s) of chat %d as quick answers", len(ids), chat_id)
        try:
            self.hook.config  # noqa: B018 - validate the connection before any request
        except Exception as exc:
            self._raise(exc)
        if len(ids) == 1:
            self._save_one(chat_id, ids[0])
        else:
            self._save_many(chat_id, ids, share)
        self.log.info("Saved %d message(s) of chat %d as quick answers", len(ids), chat_id)
        return ids

    def _raise(self, exc: BaseException) -> None:
        from airflow_provider_bitrix24.client.errors import Bitrix24Error
        from airflow_provider_bitrix24.failures import to_airflow

        if isinstance(exc, Bitrix24Error):
            raise to_airflow(exc) from None
        raise exc

    def _save_one(self, chat_id: int, message_id: int) -> None:
        try:
            result = self.hook.call(METHOD, {"CHAT_ID": chat_id, "MESSAGE_ID": message_id})
        except Exception as exc:
            self._raise(exc)
        if result is not True:
            raise AirflowFailException(
                f"Could not save message {message_id} of chat {chat_id}: the portal answered {show(result)} instead of "
                "true, so nothing was saved. Hint: check that the message exists and that the connection's user may "
                "edit the line's quick-answer list."
            )

    def _save_many(self, chat_id: int, ids: list[int], share: float | None) -> None:
        from airflow_provider_bitrix24.client.errors import Bitrix24Error
        from airflow_provider_bitrix24.client.pipeline import BatchOptions
        from airflow_provider_bitrix24.failures import describe, to_airflow

        saved = 0
        failed = 0

        def progress(update: Progress) -> None:
            nonlocal saved, failed
            for item in update.items:
                if item.ok and item.result is True:
                    saved += 1
                else:
                    failed += 1
            self.log.info("Saved %d/%d, %d failed", saved, len(ids), failed)

        commands = {str(m): (METHOD, {"CHAT_ID": chat_id, "MESSAGE_ID": m}) for m in ids}
        try:
            options = BatchOptions(
                stop_codes=CHAT_LEVEL_CODES, on_progress=progress, spread=True, max_burst_share=share
            )
            items = self.hook.call_batch(commands, options=options)
        except Bitrix24Error as err:
            if saved or failed:
                self.log.warning("Stopped after saving %d/%d: %s", saved, len(ids), err)
            raise to_airflow(err) from None
        chat_level = next((i.error for i in items if i.error is not None and i.error.code in CHAT_LEVEL_CODES), None)
        if chat_level is not None:
            # Every other message of this chat would fail the same way: no new request was sent after it.
            raise AirflowFailException(describe(chat_level))
        failures: list[tuple[str, str]] = []
        transient: list[tuple[str, str]] = []
        for item in items:
            if item.error is not None and item.error.retryable:
                transient.append((item.key, item.error.code))
            elif item.error is not None:
                failures.append((item.key, item.error.code))
            elif item.result is not True:
                failures.append((item.key, f"answered {show(item.result)}"))
        if not failures and not transient:
            return
        done = len(ids) - len(failures) - len(transient)
        if transient:
            # Some saves may succeed on a later try: leave it to Airflow's retries (a retry saves the saved ones
            # again harmlessly, since the portal updates an answer that already holds the same message), and name
            # the permanent failures too, so that nobody waits for retries to fix them.
            from airflow.providers.common.compat.sdk import AirflowException

            permanent = (
                f" Permanent (a retry fails again, naming them): {_reasons(failures)}. Hint: {_hint(items)}."
                if failures
                else ""
            )
            raise AirflowException(
                f"Could not save {len(failures) + len(transient)} of {len(ids)} message(s) of chat {chat_id} "
                f"({done} were saved). Transient (the task's retries will save them; saving a message again updates "
                f"the same answer): {_reasons(transient)}.{permanent}"
            )
        raise AirflowFailException(
            f"Could not save {len(failures)} of {len(ids)} message(s) of chat {chat_id} "
            f"(the other {done} were saved): {_reasons(failures)}. Hint: {_hint(items)}"
        )


def _reasons(failures: list[tuple[str, str]], limit: int = 20) -> str:
    """``"key: code; key: code"`` for the first ``limit`` failures, then how many more there are."""
    reasons = "; ".join(f"{key}: {why}" for key, why in failures[:limit])
    return reasons + (f" and {len(failures) - limit} more" if len(failures) > limit else "")


def _hint(items: list[BatchItem]) -> str:
    """The hint of the first permanent error among ``items``, or the one for saves answered other than true."""
    from airflow_provider_bitrix24.client.errors import hint

    first = next((i.error for i in items if i.error is not None and not i.error.retryable), None)
    if first is None:
        return "the portal answered false: check that the messages exist and the user may edit the list"
    what = hint(first.code)
    return f"{what}." if what else str(first)
