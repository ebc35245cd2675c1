"""
Keep credentials out of logs.

The webhook code travels in the URL path and OAuth tokens in the body or query string, and HTTP libraries log
URLs (``httpx`` at INFO, ``urllib3`` at DEBUG). Every secret the client handles is registered here, and a
logging filter on those libraries' loggers replaces registered secrets with ``***`` before a record is
written. Inside Airflow the hook also hands each secret to Airflow's own masker.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

_MIN_LENGTH: Final = 4
_secrets: set[str] = set()
#: The registered secrets, longest first (a secret inside a longer one is replaced after it); rebuilt on change.
_ordered: tuple[str, ...] = ()
_lock = threading.Lock()
#: Loggers of the HTTP stacks the client uses; their records may contain full URLs.
HTTP_LOGGERS: Final = ("httpx", "httpcore", "urllib3", "urllib3.connectionpool", "requests")


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`redact` and the log filter hide it."""
    global _ordered
    if value and len(value) >= _MIN_LENGTH and value not in _secrets:
        with _lock:
            _secrets.add(value)
            _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``***``."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrite a record's message and arguments with the secrets replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _ordered:
            try:
                message = record.getMessage()
            except Exception:
                return True
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_filter = RedactingFilter()
_installed = False


def install_log_filter() -> None:
    """Attach the redacting filter to the HTTP libraries' loggers (idempotent)."""
    global _installed
    if _installed:
        return
    with _lock:
        for name in HTTP_LOGGERS:
            logger = logging.getLogger(name)
            if _filter not in logger.filters:
                logger.addFilter(_filter)
        _installed = True
