"""
The one boundary between the HTTP libraries and the client: how their failures become client errors.

The sync client sends with ``requests``, the async one with ``httpx``; each names the classes by which its library
says "timed out", "the connection failed or dropped" and "the request failed otherwise" in a
:class:`LibraryErrors`, and :func:`map_failure` turns any of them into the same :class:`Bitrix24TransportError`
(``TIMEOUT``, ``CONNECTION_FAILED`` or ``REQUEST_FAILED``, all retryable). The library's exception is never kept:
its text holds the URL, and with a webhook the URL holds the credential. Neither library is imported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from airflow_provider_bitrix24.client.errors import Bitrix24ResponseError, Bitrix24TransportError
from airflow_provider_bitrix24.client.wire import HttpResponse


@dataclass(frozen=True)
class LibraryErrors:
    """
    How one HTTP library reports a failed request.

    :param timeouts: No whole answer in time.
    :param drops: The connection failed or was dropped before an answer.
    :param others: Any other failure of a request (checked last).
    """

    timeouts: tuple[type[BaseException], ...]
    drops: tuple[type[BaseException], ...]
    others: tuple[type[BaseException], ...] = ()

    @property
    def caught(self) -> tuple[type[BaseException], ...]:
        """Every class to catch around a request."""
        return self.timeouts + self.drops + self.others


def timed_out(method: str, timeout: float) -> Bitrix24TransportError:
    return Bitrix24TransportError("TIMEOUT", f"no whole answer within {timeout:g} s", method=method)


def map_failure(
    exc: BaseException, errors: LibraryErrors, *, method: str, timeout: float, expired: bool = False
) -> Bitrix24TransportError:
    """
    The client error for a library's failure. Raise it outside the ``except`` block that caught ``exc``, so that
    the library's exception is not attached as context.

    :param expired: The client's own deadline cut the answer off (a dropped connection is then a timeout).
    """
    name = type(exc).__name__
    if isinstance(exc, errors.timeouts) or (expired and isinstance(exc, errors.drops)):
        return timed_out(method, timeout)
    if isinstance(exc, errors.drops):
        return Bitrix24TransportError(
            "CONNECTION_FAILED", f"the connection failed or was dropped before an answer ({name})", method=method
        )
    return Bitrix24TransportError("REQUEST_FAILED", name, method=method)


def too_large(limit: int, status: int, method: str) -> Bitrix24ResponseError:
    """The error for an answer longer than ``max_body_bytes``."""
    return Bitrix24ResponseError(
        "RESPONSE_TOO_LARGE", f"the answer exceeds {limit} bytes", status=status, method=method
    )


def answer(status: int, body: bytes, headers: Iterable[tuple[str, str]]) -> HttpResponse:
    """An :class:`HttpResponse` with the header names in lower case."""
    return HttpResponse(status, body, {name.lower(): value for name, value in headers})
