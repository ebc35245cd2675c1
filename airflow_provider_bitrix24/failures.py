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

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.errors import Bitrix24Error

#: What to do about each permanent error, in one line.
HINTS: dict[str, str] = {
    "INVALID_CONNECTION": "fix the Airflow connection field named above",
    "NO_AUTH_FOUND": "the webhook code or token is wrong or revoked; update the Airflow connection",
    "INVALID_CREDENTIALS": "the webhook user/code pair is wrong, or that user lacks rights; update the connection",
    "invalid_token": "the OAuth access token is unknown to the portal; re-authorise the application",
    "expired_token": "the OAuth token stayed expired after a refresh; re-authorise the application",
    "invalid_grant": (
        "the refresh token is no longer valid; re-authorise the application and put the new refresh token in the "
        "connection (and delete the Variable bitrix24_oauth_token__<chain id> named in the error, if any)"
    ),
    "invalid_client": "the OAuth client_id or client_secret is wrong, or the app is not installed on this portal",
    "PAYMENT_REQUIRED": "the application's paid period is over",
    "insufficient_scope": "add the 'imopenlines' scope to the webhook or application permissions",
    "ACCESS_DENIED": "the connection's user may not open this chat or session (or the plan has no REST access)",
    "ACCESS_ERROR": "the connection's user has no access to this dialog",
    "user_access_error": "an administrator restricted the application to other users",
    "WRONG_AUTH_TYPE": "this method needs an OAuth application, not a webhook",
    "CHAT_ID": "chat_id is not an existing open-line chat (see imopenlines.dialog.get)",
    "CHAT_TYPE": "chat_id points to a chat that is not an open line",
    "CANT_SAVE_QUICK_ANSWER": "the message does not exist, or the user cannot edit the line's quick-answer list",
    "INVALID_SESSION_ID": "the chat has no session yet; pass session_id, or wait until a session opens",
    "MISSING_REQUIRED_PARAM": "pass session_id or chat_id",
    "ERROR_METHOD_NOT_FOUND": "the method does not exist on this portal, or the webhook URL is incomplete",
    "INVALID_REQUEST": "the portal requires https",
    "OVERLOAD_LIMIT": "Bitrix24 blocked REST for this portal by hand; contact Bitrix24 support",
    "PORTAL_DELETED": "the portal is deleted or its public part is closed",
    "RESPONSE_TOO_LARGE": "the portal's answer was larger than the client accepts",
}


def describe(err: Bitrix24Error) -> str:
    """The error's text plus the hint for its code, if any."""
    hint = HINTS.get(err.code)
    return f"{err}. Hint: {hint}." if hint else str(err)


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
