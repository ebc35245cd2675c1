"""Notifiers: post DAG and task events into Bitrix24 chats."""

from __future__ import annotations

from airflow_provider_bitrix24.notifications.bitrix24 import Bitrix24Notifier, send_bitrix24_notification

__all__ = ["Bitrix24Notifier", "send_bitrix24_notification"]
