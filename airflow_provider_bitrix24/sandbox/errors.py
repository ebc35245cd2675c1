"""
Error codes the portal answers with, their documented HTTP status and description.

Bodies are exactly ``{"error": ..., "error_description": ...}``, plus ``"argument"`` for ``ERROR_ARGUMENT``, and
never carry a ``time`` block.

Statuses follow answers recorded from real portals where they differ from the documentation's table:
``insufficient_scope`` and ``INVALID_CREDENTIALS`` are 401 (the docs say 403), ``PORTAL_DELETED`` is 410 (the docs
say 500), and a portal whose subscription ended answers ``PAYMENT_REQUIRED`` with 401.
"""

from __future__ import annotations

from typing import Any

WEBHOOK_SCOPE_TEXT = "The request requires higher privileges than provided by the webhook token"
OAUTH_SCOPE_TEXT = "The request requires higher privileges than provided by the access token"
CHAT_ACCESS_TEXT = "You do not have permission to access this chat."
#: What ``session.history.get`` answered with ``CHAT_ID`` alone on older imopenlines versions (documentation note).
HISTORY_CHAT_ID_IGNORED_TEXT = "You cannot open this conversation because you do not have sufficient rights."

#: code -> (HTTP status, description), system errors first, then Open Lines method errors.
ERRORS: dict[str, tuple[int, str]] = {
    "INTERNAL_SERVER_ERROR": (500, "Internal server error"),
    "ERROR_UNEXPECTED_ANSWER": (500, "Server returned an unexpected response"),
    "QUERY_LIMIT_EXCEEDED": (503, "Too many requests"),
    "ERROR_BATCH_METHOD_NOT_ALLOWED": (405, "Method is not allowed for batch usage"),
    "ERROR_BATCH_LENGTH_EXCEEDED": (400, "Max batch length exceeded"),
    "NO_AUTH_FOUND": (401, "Wrong authorization data"),
    "INVALID_REQUEST": (400, "Https required."),
    "OVERLOAD_LIMIT": (503, "REST API is blocked due to overload"),
    "ACCESS_DENIED": (403, "REST API is available only on commercial plans"),
    "INVALID_CREDENTIALS": (401, "Invalid request credentials"),
    "ERROR_MANIFEST_IS_NOT_AVAILABLE": (404, "Manifest is not available"),
    "insufficient_scope": (401, WEBHOOK_SCOPE_TEXT),
    "expired_token": (401, "The access token provided has expired"),
    "invalid_token": (401, "The access token provided is invalid"),
    "user_access_error": (403, "The user does not have access to the application"),
    "PORTAL_DELETED": (410, "Portal was deleted"),
    "PAYMENT_REQUIRED": (401, "Subscription has been ended"),
    "OPERATION_TIME_LIMIT": (429, "Method is blocked due to operation time limit."),
    "ERROR_METHOD_NOT_FOUND": (404, "Method not found!"),
    "METHOD_CONFIRM_WAITING": (401, "Waiting for confirmation"),
    "METHOD_CONFIRM_DENIED": (403, "Method call denied"),
    "WRONG_AUTH_TYPE": (403, "Current authorization type is denied for this method"),
    "authorization_error": (401, "Unable to authorize user"),
    "APPLICATION_NOT_FOUND": (401, "Application not found"),
    "CONNECTION_ERROR": (401, "Error connecting to authorization server"),
    "WRONG_ENCODING": (400, "Wrong request encoding"),
    "ERROR_CORE": (400, "Internal error"),
    "ERROR_ARGUMENT": (400, "Invalid argument"),
    "ERROR_NOT_FOUND": (400, "Not found"),
    "CHAT_ID": (400, "Chat ID is invalid."),
    "CHAT_TYPE": (400, "This chat is not Open Channel"),
    "CANT_SAVE_QUICK_ANSWER": (400, "Error saving canned response"),
    "USER_ID": (400, "User ID is invalid."),
    "IM_LOAD_ERROR": (400, "Error initializing Instant Messenger module."),
    "MISSING_REQUIRED_PARAM": (400, "Session ID or Chat ID must be provided"),
    "INVALID_SESSION_ID": (400, "Unable to determine session ID from provided parameters"),
    "ACCESS_ERROR": (400, "You do not have access to the specified dialog"),
    "IM_NOT_INSTALLED": (400, "Messenger is not installed."),
}


def standard_status(code: str) -> int:
    """The documented HTTP status of ``code`` (400 for codes the portal does not define)."""
    return ERRORS.get(code, (400, ""))[0]


def standard_description(code: str) -> str:
    """The documented description of ``code`` (empty for codes the portal does not define)."""
    return ERRORS.get(code, (400, ""))[1]


class RestError(Exception):
    """
    A REST error answer.

    :param code: The ``error`` string.
    :param description: The ``error_description``; the standard text of ``code`` when omitted.
    :param status: HTTP status; the documented status of ``code`` when omitted.
    :param argument: Name of the offending parameter (``ERROR_ARGUMENT`` only).
    """

    def __init__(
        self,
        code: str,
        description: str | None = None,
        status: int | None = None,
        argument: str | None = None,
    ) -> None:
        self.code = code
        self.description = standard_description(code) if description is None else description
        self.status = standard_status(code) if status is None else status
        self.argument = argument
        super().__init__(f"{code}: {self.description}")

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        payload: dict[str, Any] = {"error": self.code, "error_description": self.description}
        if self.argument is not None:
            payload["argument"] = self.argument
        return payload
