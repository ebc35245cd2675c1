"""Trigger that waits for messages in an open-line session, polling through a poller shared per portal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_bitrix24.history import HistoryArgumentError, HistoryFilter, history_query


class SessionHistoryTrigger(BaseTrigger):
    """
    Wait until an open-line session holds the messages a sensor is waiting for.

    Every trigger of the same connection in one triggerer process polls through one shared poller, which packs
    the due polls of up to 50 sessions into each ``batch`` request and paces the requests to the portal's rate
    limit: hundreds of waits cost a few requests per round instead of one each.

    The trigger yields exactly one event and never raises (the format: :mod:`.events`):

    * ``{"status": "success", "messages": [...]}`` with the matching messages, ascending by id;
    * ``{"status": "error", "code": ..., "message": ..., "retryable": ...}`` for a permanent error of the session
      or of the credential (transient errors only delay the next poll), or when the poller itself failed.

    .. seealso::
        :class:`~airflow_provider_bitrix24.sensors.session_history.SessionHistorySensor`

    :param bitrix24_conn_id: The Bitrix24 connection.
    :param session_id: The session to read; wins over ``chat_id``.
    :param chat_id: The chat whose latest session is read when ``session_id`` is not given.
    :param after_message_id: Only messages with a greater id count.
    :param authors: Author types that count: ``any``, ``client``, ``operator``, ``bot``, ``system``.
    :param text_pattern: A regular expression searched in the message text.
    :param min_messages: How many matching messages end the wait.
    :param poll_interval: Seconds between two polls of this session.
    """

    def __init__(
        self,
        *,
        bitrix24_conn_id: str,
        session_id: int | None = None,
        chat_id: int | None = None,
        after_message_id: int | None = None,
        authors: Sequence[str] = ("any",),
        text_pattern: str | None = None,
        min_messages: int = 1,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is untyped
        self.bitrix24_conn_id = bitrix24_conn_id
        self.session_id = session_id
        self.chat_id = chat_id
        self.after_message_id = after_message_id
        self.authors = [authors] if isinstance(authors, str) else list(authors)
        self.text_pattern = text_pattern
        self.min_messages = min_messages
        self.poll_interval = float(poll_interval)

    def __repr__(self) -> str:
        where = f"session_id={self.session_id}" if self.session_id is not None else f"chat_id={self.chat_id}"
        return f"{type(self).__name__}({where}, bitrix24_conn_id={self.bitrix24_conn_id!r})"

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_bitrix24.triggers.session_history.SessionHistoryTrigger",
            {
                "bitrix24_conn_id": self.bitrix24_conn_id,
                "session_id": self.session_id,
                "chat_id": self.chat_id,
                "after_message_id": self.after_message_id,
                "authors": list(self.authors),
                "text_pattern": self.text_pattern,
                "min_messages": self.min_messages,
                "poll_interval": self.poll_interval,
            },
        )

    def _target(self) -> tuple[str, int]:
        ((field, value),) = history_query(self.session_id, self.chat_id).items()
        return field, value

    async def _new_client(self) -> Any:
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        return await Bitrix24Hook(bitrix24_conn_id=self.bitrix24_conn_id).get_async_client()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_bitrix24.client.errors import Bitrix24Error
        from airflow_provider_bitrix24.triggers._poller import get_poller
        from airflow_provider_bitrix24.triggers.events import (
            encode_argument_error,
            encode_client_error,
            encode_failure,
            encode_messages,
        )

        try:
            target = self._target()
            history_filter = HistoryFilter.build(
                after_message_id=self.after_message_id,
                author=self.authors,
                text_pattern=self.text_pattern,
                min_messages=self.min_messages,
            )
            self.log.info(
                "Waiting for %s in %s=%s (polling every %g s)",
                history_filter.describe(),
                target[0],
                target[1],
                self.poll_interval,
            )
            poller = get_poller(self.bitrix24_conn_id, self._new_client)
            messages = await poller.wait(target, history_filter, self.poll_interval)
            event = encode_messages(messages)
        except asyncio.CancelledError:
            raise
        except Bitrix24Error as err:
            event = encode_client_error(err)
        except HistoryArgumentError as err:
            event = encode_argument_error(str(err))
        except Exception as err:
            event = encode_failure(err)
        yield TriggerEvent(event)
