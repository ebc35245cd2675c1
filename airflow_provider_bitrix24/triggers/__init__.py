"""Triggers of the Bitrix24 provider. ``Bitrix24MessageTrigger`` is imported on first use."""

from __future__ import annotations

from typing import Any

__all__ = ["Bitrix24MessageTrigger"]


def __getattr__(name: str) -> Any:
    if name == "Bitrix24MessageTrigger":
        from airflow_provider_bitrix24.triggers.messages import Bitrix24MessageTrigger

        return Bitrix24MessageTrigger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
