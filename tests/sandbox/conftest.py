"""
Fixtures of the sandbox portal tests: one portal on a free loopback port for the whole run, reset before and
after every test, and a ``requests`` session that never goes through a proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal

#: Small enough to build in milliseconds, large enough for batch tests.
BULK_MESSAGES = 300
EXTRA_SESSIONS = 3


@pytest.fixture(scope="session")
def sandbox_portal() -> Iterator[SandboxPortal]:
    config = SandboxConfig(rate_limit_enabled=False, bulk_messages=BULK_MESSAGES, extra_sessions=EXTRA_SESSIONS)
    portal = SandboxPortal(config).start()
    yield portal
    portal.stop()


@pytest.fixture
def portal(sandbox_portal: SandboxPortal) -> Iterator[SandboxPortal]:
    """The shared portal with seed data, limits and config as at start."""
    sandbox_portal.reset()
    yield sandbox_portal
    sandbox_portal.reset()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


class Api:
    """Calls the portal through its inbound webhook (or any other base URL) with a JSON body."""

    def __init__(self, http: requests.Session, portal: SandboxPortal) -> None:
        self.http = http
        self.portal = portal

    def post(self, method: str, params: dict[str, Any] | None = None, *, base: str | None = None) -> requests.Response:
        return self.http.post((base or self.portal.webhook_url) + method, json=params or {}, timeout=10)

    def ok(self, method: str, params: dict[str, Any] | None = None, *, base: str | None = None) -> Any:
        response = self.post(method, params, base=base)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def error(self, method: str, params: dict[str, Any] | None = None, *, base: str | None = None) -> tuple[int, dict]:
        response = self.post(method, params, base=base)
        assert response.status_code != 200, response.text
        return response.status_code, response.json()


@pytest.fixture
def api(http: requests.Session, portal: SandboxPortal) -> Api:
    return Api(http, portal)
