"""
Turn Bitrix24 client errors into Airflow outcomes.

Permanent errors (bad credentials, missing scope, wrong chat, invalid connection) fail the task at once with
:class:`AirflowFailException`, so that Airflow does not burn retries on them; the message starts with the
Bitrix24 code and ends with a one-line hint of what to fix. Transient errors that outlasted the client's own
retries become an ordinary :class:`AirflowException`, so that the task's ``retries`` take over.

The operators and sensors do this themselves; TaskFlow code that calls the hook gets the same behaviour with
``Bitrix24Hook(..., airflow_errors=True)`` or by wrapping its calls in :func:`airflow_errors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


@contextlib.contextmanager
def airflow_errors() -> Iterator[None]:
    """
    Turn the client errors raised inside the block into what the provider's operators raise: permanent ones
    (revoked webhook, missing scope, wrong chat, malformed connection) into :class:`AirflowFailException`, so that
    Airflow does not retry them; transient ones that outlasted the client's retries into :class:`AirflowException`,
    so that the task's ``retries`` apply. The client error stays available as ``__cause__`` (a batch run's
    outcomes, for instance). Works as a decorator too::

        @task(retries=3)
        @airflow_errors()
        def read(): ...
    """
    from airflow_provider_bitrix24.client.errors import Bitrix24Error

    try:
        yield
    except Bitrix24Error as err:
        raise to_airflow(err) from err
