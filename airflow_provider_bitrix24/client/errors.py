"""
Exceptions raised by the Bitrix24 REST client.

Every exception carries the Bitrix24 error code, its description, the HTTP status and the REST method, and
nothing else: never the request URL, the webhook code or a token. ``str(exc)`` starts with the code so that a
log reader sees it at once, e.g. ``QUERY_LIMIT_EXCEEDED: Too many requests (HTTP 503, method batch)``.

Errors are mapped by their ``error`` code (see :data:`ERROR_CODES`), never by message text; the HTTP status
is only used when the body carries no code at all.
"""

from __future__ import annotations

from typing import Any, Final


class Bitrix24Error(Exception):
    """
    Base class for every error of the Bitrix24 client.

    :param code: Bitrix24 ``error`` code, or a client-side code such as ``TIMEOUT``.
    :param description: Human-readable description (the portal's ``error_description``).
    :param status: HTTP status of the answer, ``None`` when no answer arrived.
    :param method: REST method that was called.
    """

    #: Whether repeating the same call later may succeed.
    retryable: bool = False

    def __init__(
        self,
        code: str,
        description: str = "",
        *,
        status: int | None = None,
        method: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.code = code
        self.description = description
        self.status = status
        self.method = method
        if retryable is not None:
            self.retryable = retryable
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.status is not None:
            where.append(f"HTTP {self.status}")
        if self.method:
            where.append(f"method {self.method}")
        text = f"{self.code}: {self.description}" if self.description else self.code
        return f"{text} ({', '.join(where)})" if where else text

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuild from the fields (the default would pass the formatted message as ``code``).
        args = (type(self), self.code, self.description, self.status, self.method, self.retryable)
        return (_rebuild, args, self.__dict__)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, method={self.method!r}, "
            f"retryable={self.retryable!r})"
        )


def _rebuild(
    cls: type[Bitrix24Error],
    code: str,
    description: str,
    status: int | None,
    method: str | None,
    retryable: bool,
) -> Bitrix24Error:
    err = cls.__new__(cls)
    Bitrix24Error.__init__(err, code, description, status=status, method=method, retryable=retryable)
    return err


class Bitrix24ConfigError(Bitrix24Error, ValueError):
    """
    The connection settings are malformed; raised before any request is sent.

    :param field: The field as stored, e.g. ``login`` or ``extra.rate_limit``.
    :param problem: What is wrong with it; never the value of a field that may hold a secret.
    :param label: How the connection form labels the field; the message then names both, e.g.
        ``Webhook user ID (login)``.
    """

    def __init__(self, field: str, problem: str, *, label: str | None = None) -> None:
        self.field = field
        self.label = label
        super().__init__("INVALID_CONNECTION", f"{label} ({field}): {problem}" if label else f"{field}: {problem}")


class Bitrix24TransportError(Bitrix24Error):
    """No usable answer arrived: connection refused or reset, DNS failure, timeout."""

    retryable = True


class Bitrix24ResponseError(Bitrix24Error):
    """The answer is not a Bitrix24 envelope (proxy HTML page, empty or truncated JSON, too large)."""


class Bitrix24ApiError(Bitrix24Error):
    """The portal answered with ``{"error": ..., "error_description": ...}``."""


class Bitrix24AuthError(Bitrix24ApiError):
    """The credential is missing, wrong, revoked, or the OAuth server refused it."""


class Bitrix24TokenExpiredError(Bitrix24AuthError):
    """The OAuth access token expired (``expired_token``); the client refreshes it and repeats the call."""


class Bitrix24PermissionError(Bitrix24ApiError):
    """The credential is valid but lacks a scope, a plan feature or a right."""


class Bitrix24RateLimitError(Bitrix24ApiError):
    """The portal's request-rate limit was hit (``QUERY_LIMIT_EXCEEDED``)."""

    retryable = True


class Bitrix24OperationTimeLimitError(Bitrix24ApiError):
    """
    The method is blocked by the portal's per-method operating-time limit (``OPERATION_TIME_LIMIT``).

    :param unblocks_at: Unix time at which the method is expected to be callable again, when known.
    """

    retryable = True
    unblocks_at: float | None = None


class Bitrix24ServerError(Bitrix24ApiError):
    """The portal reported a server-side failure."""


class Bitrix24RequestError(Bitrix24ApiError):
    """The request itself is wrong: unknown method, batch misuse, HTTPS required, bad parameters."""


class Bitrix24MethodError(Bitrix24ApiError):
    """A method-level error, such as ``CHAT_ID`` or ``CANT_SAVE_QUICK_ANSWER``; permanent."""


class Bitrix24TokenStoreError(Bitrix24AuthError):
    """
    The portal rotated the OAuth refresh token, but the new pair could not be stored for the other processes.

    Bitrix24 refresh tokens work once: a pair that is not stored leaves every other process with a spent token.
    """


class Bitrix24PortalMovedError(Bitrix24RequestError):
    """The portal answered with a redirect to an address the client will not send credentials to."""


class Bitrix24BatchError(Bitrix24Error):
    """
    A run of batch commands ended early on a request error (``call_batch``, ``client.batch``): it carries every
    command's outcome, so that nothing the portal already did is run twice by a retry.

    The exception raised is also an instance of the error that ended the run (``cause``), with its ``code``,
    ``description``, ``status``, ``method`` and ``retryable``: ``except Bitrix24AuthError`` still catches a run
    ended by a bad credential. Its text is the cause's, followed by the counts of each outcome (never a key, a
    parameter or a secret).

    :ivar items: One ``BatchItem`` per command, in input order: its result when it was done, its error when it
        failed, ``NOT_EXECUTED`` when it was never sent, ``NO_ANSWER`` when it was sent but no readable answer
        came (the portal may have run it).
    :ivar outcomes: Each command's key mapped to ``"done"``, ``"failed"``, ``"unknown"`` or ``"not_sent"``.
    :ivar cause: The error that ended the run.
    """

    DONE: Final = "done"
    FAILED: Final = "failed"
    UNKNOWN: Final = "unknown"
    NOT_SENT: Final = "not_sent"

    items: list[Any]
    outcomes: dict[str, str]
    cause: Bitrix24Error

    def _keys(self, outcome: str) -> list[str]:
        return [key for key, value in self.outcomes.items() if value == outcome]

    @property
    def done(self) -> list[str]:
        """Keys of the commands the portal ran successfully."""
        return self._keys(self.DONE)

    @property
    def failed(self) -> list[str]:
        """Keys of the commands that failed (their items carry the error); the portal did not run them."""
        return self._keys(self.FAILED)

    @property
    def unknown(self) -> list[str]:
        """Keys of the commands sent without a readable answer: the portal may or may not have run them."""
        return self._keys(self.UNKNOWN)

    @property
    def not_sent(self) -> list[str]:
        """Keys of the commands never sent."""
        return self._keys(self.NOT_SENT)

    def summary(self) -> str:
        """The counts of each outcome, e.g. ``batch run of 120 command(s): 50 done, 0 failed, ...``."""
        counts = {o: 0 for o in (self.DONE, self.FAILED, self.UNKNOWN, self.NOT_SENT)}
        for value in self.outcomes.values():
            counts[value] = counts.get(value, 0) + 1
        return (
            f"batch run of {len(self.outcomes)} command(s): {counts[self.DONE]} done, {counts[self.FAILED]} failed, "
            f"{counts[self.UNKNOWN]} sent without an answer, {counts[self.NOT_SENT]} not sent"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_batch, (type(self.cause), self.args), self.__dict__)


_batch_classes: dict[type[Bitrix24Error], type[Bitrix24BatchError]] = {}


def batch_error(cause: Bitrix24Error, items: list[Any], outcomes: dict[str, str]) -> Bitrix24BatchError:
    """
    The :class:`Bitrix24BatchError` for a run that ``cause`` ended: an instance of both classes, with the cause's
    fields, ``items`` and ``outcomes``.
    """
    err = _batch_class(type(cause)).__new__(_batch_class(type(cause)))
    err.__dict__.update(cause.__dict__)
    err.items = list(items)
    err.outcomes = dict(outcomes)
    err.cause = cause
    err.args = (f"{cause}; {err.summary()}",)
    return err


def _batch_class(cause: type[Bitrix24Error]) -> type[Bitrix24BatchError]:
    if issubclass(cause, Bitrix24BatchError):
        return cause
    cls = _batch_classes.get(cause)
    if cls is None:
        cls = _batch_classes[cause] = type(
            f"Bitrix24BatchError[{cause.__name__}]", (Bitrix24BatchError, cause), {"__module__": __name__}
        )
    return cls


def _rebuild_batch(cause: type[Bitrix24Error], args: tuple[Any, ...]) -> Bitrix24BatchError:
    cls = _batch_class(cause)
    err = cls.__new__(cls)
    err.args = args
    return err


#: Every documented error code: the exception class it maps to and whether a retry may help.
#: Codes are matched case-sensitively first, then upper-cased (the portal mixes cases).
ERROR_CODES: Final[dict[str, tuple[type[Bitrix24ApiError], bool]]] = {
    # Rate and operating limits.
    "QUERY_LIMIT_EXCEEDED": (Bitrix24RateLimitError, True),
    "OPERATION_TIME_LIMIT": (Bitrix24OperationTimeLimitError, True),
    # Server-side failures.
    "INTERNAL_SERVER_ERROR": (Bitrix24ServerError, True),
    "ERROR_UNEXPECTED_ANSWER": (Bitrix24ServerError, True),
    "CONNECTION_ERROR": (Bitrix24ServerError, True),
    "OVERLOAD_LIMIT": (Bitrix24ServerError, False),
    "PORTAL_DELETED": (Bitrix24ServerError, False),
    # Authentication.
    "NO_AUTH_FOUND": (Bitrix24AuthError, False),
    "INVALID_CREDENTIALS": (Bitrix24AuthError, False),
    "invalid_token": (Bitrix24AuthError, False),
    "expired_token": (Bitrix24TokenExpiredError, False),
    "authorization_error": (Bitrix24AuthError, False),
    "APPLICATION_NOT_FOUND": (Bitrix24AuthError, False),
    "METHOD_CONFIRM_WAITING": (Bitrix24AuthError, False),
    "invalid_grant": (Bitrix24AuthError, False),
    "invalid_client": (Bitrix24AuthError, False),
    "invalid_request": (Bitrix24AuthError, False),
    "invalid_scope": (Bitrix24PermissionError, False),
    "PAYMENT_REQUIRED": (Bitrix24AuthError, False),
    "wrong_client": (Bitrix24AuthError, False),
    "ERROR_OAUTH": (Bitrix24AuthError, False),
    "NOT_INSTALLED": (Bitrix24AuthError, False),
    # Permissions, scopes, plans.
    "insufficient_scope": (Bitrix24PermissionError, False),
    "ACCESS_DENIED": (Bitrix24PermissionError, False),
    "ACCESS_ERROR": (Bitrix24PermissionError, False),
    "user_access_error": (Bitrix24PermissionError, False),
    "WRONG_AUTH_TYPE": (Bitrix24PermissionError, False),
    "METHOD_CONFIRM_DENIED": (Bitrix24PermissionError, False),
    "INVALID_SCOPE": (Bitrix24PermissionError, False),
    # Malformed requests.
    "INVALID_REQUEST": (Bitrix24RequestError, False),
    "ERROR_METHOD_NOT_FOUND": (Bitrix24RequestError, False),
    "ERROR_BATCH_METHOD_NOT_ALLOWED": (Bitrix24RequestError, False),
    "ERROR_BATCH_LENGTH_EXCEEDED": (Bitrix24RequestError, False),
    "ERROR_MANIFEST_IS_NOT_AVAILABLE": (Bitrix24RequestError, False),
    "ERROR_ARGUMENT": (Bitrix24RequestError, False),
    "ERROR_CORE": (Bitrix24RequestError, False),
    "ERROR_NOT_FOUND": (Bitrix24RequestError, False),
    "WRONG_ENCODING": (Bitrix24RequestError, False),
}

#: HTTP statuses that mean "a gateway or the portal is briefly unavailable" when the body is not an envelope.
TRANSIENT_HTTP_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


#: The code given to an error answer whose ``error`` is empty or missing.
UNKNOWN_ERROR: Final = "UNKNOWN_ERROR"


def error_from_payload(
    code: str, description: str, *, status: int | None, method: str | None, unblocks_at: float | None = None
) -> Bitrix24ApiError:
    """
    Build the exception for an ``{"error": code, "error_description": description}`` answer.

    An empty code still gives a readable error: ``UNKNOWN_ERROR`` with whatever the portal said, retryable only
    when the HTTP status says the portal was briefly unavailable.
    """
    code = code.strip()
    if not code:
        said = f"; it said: {description}" if description.strip() else ""
        transient = status in TRANSIENT_HTTP_STATUSES
        return Bitrix24ServerError(
            UNKNOWN_ERROR,
            f"the portal answered an error without a code{said}",
            status=status,
            method=method,
            retryable=transient,
        )
    cls, retryable = ERROR_CODES.get(code) or ERROR_CODES.get(code.upper()) or (Bitrix24MethodError, False)
    err = cls(code, description, status=status, method=method, retryable=retryable)
    if isinstance(err, Bitrix24OperationTimeLimitError):
        err.unblocks_at = unblocks_at
    return err


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


def hint(code: str) -> str | None:
    """What to do about an error code, in one line; ``None`` for a code with no hint (a transient one)."""
    return HINTS.get(code)
