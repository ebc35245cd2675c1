"""
The events of a session-history wait: the one place that writes them (the trigger, for the poller's outcomes)
and reads them (the sensor's ``execute_complete``).

An event is a JSON-safe dict, since Airflow stores it between the triggerer and the worker:

* ``{"status": "success", "messages": [...]}``: the matching messages, ascending by id;
* ``{"status": "error", "message", "code", "description", "http_status", "method", "retryable"}``: a client
  error (answered by the portal or raised by the client), rebuilt as a
  :class:`~airflow_provider_bitrix24.client.errors.Bitrix24Error` when read;
* ``{"status": "error", "code": "INVALID_ARGUMENT", "message", "retryable": False}``: an argument of the wait is
  bad;
* ``{"status": "error", "code": <exception class>, "message", "retryable": True}``: the trigger itself failed.

Events written by earlier versions have the same shape, so a wait deferred before an upgrade resumes after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.errors import Bitrix24Error

SUCCESS: Final = "success"
ERROR: Final = "error"
#: The code of an event saying an argument of the wait is bad.
INVALID_ARGUMENT: Final = "INVALID_ARGUMENT"


# --------------------------------------------------------------------------- writing


def encode_messages(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The event of a wait that found its messages."""
    return {"status": SUCCESS, "messages": list(messages)}


def error_fields(err: Bitrix24Error) -> dict[str, Any]:
    """The fields of a client error, JSON-safe, to carry in a trigger event."""
    return {
        "code": err.code,
        "description": err.description,
        "http_status": err.status,
        "method": err.method,
        "retryable": err.retryable,
    }


def encode_client_error(err: Bitrix24Error) -> dict[str, Any]:
    """The event of a wait ended by a client error (permanent, or the poller's own failure)."""
    return {"status": ERROR, "message": str(err), **error_fields(err)}


def encode_argument_error(message: str) -> dict[str, Any]:
    """The event of a wait whose arguments are bad (fails without retries)."""
    return {"status": ERROR, "code": INVALID_ARGUMENT, "message": message, "retryable": False}


def encode_failure(exc: BaseException) -> dict[str, Any]:
    """The event of a trigger that failed with an unexpected exception (retryable: the task's retries apply)."""
    name = type(exc).__name__
    return {"status": ERROR, "code": name, "message": f"{name}: {exc}", "retryable": True}


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class WaitOutcome:
    """
    What an event says: the ``messages`` found, or a client ``error`` to raise as a poke would, or a ``failure``
    text with whether it is ``retryable`` (``None``: unknown, treated as retryable).
    """

    messages: list[dict[str, Any]] | None = None
    error: Bitrix24Error | None = None
    failure: str | None = None
    retryable: bool | None = None


def decode_event(event: Mapping[str, Any]) -> WaitOutcome:
    """Read an event written by this module (or by an earlier version of the trigger)."""
    if event.get("status") == SUCCESS:
        return WaitOutcome(messages=list(event.get("messages") or []))
    code = str(event.get("code") or "UNKNOWN")
    message = str(event.get("message") or code)
    if "description" in event:  # an error answered by the portal or raised by the client
        from airflow_provider_bitrix24.client.errors import Bitrix24Error

        error = Bitrix24Error(
            code,
            str(event.get("description") or ""),
            status=event.get("http_status"),
            method=event.get("method"),
            retryable=bool(event.get("retryable")),
        )
        return WaitOutcome(error=error)
    retryable = event.get("retryable")
    return WaitOutcome(failure=message, retryable=retryable if isinstance(retryable, bool) else None)
