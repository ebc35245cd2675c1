"""
A local Bitrix24 portal for tests and demos (standard library only).

>>> from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
>>> with SandboxPortal(SandboxConfig(port=0)) as portal:  # doctest: +SKIP
...     requests.post(portal.webhook_url + "profile").json()

See :mod:`airflow_provider_bitrix24.sandbox.state` for the seed data,
:mod:`airflow_provider_bitrix24.sandbox.faults` for scripted failures and
:mod:`airflow_provider_bitrix24.sandbox.latency` for the latency model (``latency="realistic"``).
"""

from __future__ import annotations

from airflow_provider_bitrix24.sandbox.config import SandboxConfig, WebhookSpec
from airflow_provider_bitrix24.sandbox.server import SandboxPortal
from airflow_provider_bitrix24.sandbox.state import SEED, SeedIds

__all__ = ["SEED", "SandboxConfig", "SandboxPortal", "SeedIds", "WebhookSpec"]
