"""
Turn Bitrix24 client errors into Airflow outcomes.

Permanent errors (bad credentials, missing scope, wrong chat, invalid connection) fail the task at once with
:class:`AirflowFailException`, so that Airflow does not burn retries on them; the message starts with the
Bitrix24 code and ends with a one-line hint of what to fix. Transient errors that outlasted the client's own
retries become an ordinary :class:`AirflowException`, so that the task's ``retries`` take over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_bitrix24.client.errors import HINTS, hint

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.errors import Bitrix24Error

__all__ = ["HINTS", "describe", "hint", "to_airflow"]


def describe(err: Bitrix24Error) -> str:
    """The error's text plus the hint for its code, if any."""
    what = hint(err.code)
    return f"{err}. Hint: {what}." if what else str(err)


def to_airflow(err: Bitrix24Error) -> Exception:
    """The exception a task should raise for ``err``: fail at once if permanent, else let retries apply."""
    if err.retryable:
        return AirflowException(f"{err} (transient; the task's retries may succeed)")
    return AirflowFailException(describe(err))
