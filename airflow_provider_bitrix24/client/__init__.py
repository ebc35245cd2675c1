"""
A Bitrix24 REST client with no Airflow dependency.

``Bitrix24Client`` (sync, ``requests``) and ``AsyncBitrix24Client`` (asyncio, ``httpx``) share one core:
request building, envelope parsing, error mapping, pacing to the portal's limits, retries, OAuth refresh,
batching and paging.

The two clients are loaded on first use, so that importing the rest (as operators do at DAG-parse time) does not
import the HTTP stacks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airflow_provider_bitrix24.client.config import (
    OAuthCredentials,
    PortalConfig,
    RateLimit,
    WebhookAuth,
    parse_connection,
)
from airflow_provider_bitrix24.client.core import BATCH_LIMIT, BatchItem, Envelope
from airflow_provider_bitrix24.client.errors import (
    Bitrix24ApiError,
    Bitrix24AuthError,
    Bitrix24BatchError,
    Bitrix24ConfigError,
    Bitrix24Error,
    Bitrix24MethodError,
    Bitrix24OperationTimeLimitError,
    Bitrix24PermissionError,
    Bitrix24PortalMovedError,
    Bitrix24RateLimitError,
    Bitrix24RequestError,
    Bitrix24ResponseError,
    Bitrix24ServerError,
    Bitrix24TokenExpiredError,
    Bitrix24TokenStoreError,
    Bitrix24TransportError,
)
from airflow_provider_bitrix24.client.limits import Limiter, LocalLimiter
from airflow_provider_bitrix24.client.oauth import MemoryTokenStore, TokenPair, TokenStore
from airflow_provider_bitrix24.client.pipeline import BatchOptions
from airflow_provider_bitrix24.client.retry import RetryPolicy

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.aio import AsyncBitrix24Client
    from airflow_provider_bitrix24.client.sync import Bitrix24Client

_LAZY = {"Bitrix24Client": "sync", "AsyncBitrix24Client": "aio"}

__all__ = [
    "BATCH_LIMIT",
    "AsyncBitrix24Client",
    "BatchItem",
    "BatchOptions",
    "Bitrix24ApiError",
    "Bitrix24AuthError",
    "Bitrix24BatchError",
    "Bitrix24Client",
    "Bitrix24ConfigError",
    "Bitrix24Error",
    "Bitrix24MethodError",
    "Bitrix24OperationTimeLimitError",
    "Bitrix24PermissionError",
    "Bitrix24PortalMovedError",
    "Bitrix24RateLimitError",
    "Bitrix24RequestError",
    "Bitrix24ResponseError",
    "Bitrix24ServerError",
    "Bitrix24TokenExpiredError",
    "Bitrix24TokenStoreError",
    "Bitrix24TransportError",
    "Envelope",
    "Limiter",
    "LocalLimiter",
    "MemoryTokenStore",
    "OAuthCredentials",
    "PortalConfig",
    "RateLimit",
    "RetryPolicy",
    "TokenPair",
    "TokenStore",
    "WebhookAuth",
    "parse_connection",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
