"""Transfers from Bitrix24 to other systems (``XToYOperator``)."""

from __future__ import annotations

from typing import Any

__all__ = ["SessionHistoryToObjectStorageOperator"]


def __getattr__(name: str) -> Any:
    if name == "SessionHistoryToObjectStorageOperator":
        from airflow_provider_bitrix24.transfers.session_history import SessionHistoryToObjectStorageOperator

        return SessionHistoryToObjectStorageOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
