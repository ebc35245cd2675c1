"""
No secret reaches a log, an exception, a repr, an XCom or the metadata database, on success and failure paths.

A dedicated sandbox portal uses distinctive canary values for the webhook code, the OAuth client secret and the
tokens; every path is run, then everything the run produced is scanned for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import traceback
from pathlib import Path

import pytest

from airflow_provider_bitrix24.client import AsyncBitrix24Client, Bitrix24Error, RetryPolicy, parse_connection
from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook
from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
from airflow_provider_bitrix24.sandbox.config import FULL_SCOPES, WebhookSpec
from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import AIRFLOW_HOME, run_dag, set_conn

CODE = "LEAKCANARY-webhook-7f3a9c2e"
CLIENT_SECRET = "LEAKCANARY-client-secret-41b7"
ACCESS = "LEAKCANARY-access-9d2f1b"
REFRESH = "LEAKCANARY-refresh-c0de55"
BAD_REFRESH = "LEAKCANARY-badrefresh-1111"
NO_RETRY = RetryPolicy(max_retries=0)
#: The webhook paths' timeout: long enough that a loaded machine never turns the success path into a timeout.
TIMEOUT = 2.0


@pytest.fixture(scope="module")
def portal():
    config = SandboxConfig.preset(
        "unlimited",
        webhooks=[WebhookSpec(1, CODE, FULL_SCOPES)],
        oauth_client_secret=CLIENT_SECRET,
        oauth_access_token=ACCESS,
        oauth_refresh_token=REFRESH,
    )
    with SandboxPortal(config) as started:
        yield started


@pytest.fixture
def collected(portal, logs):
    """Texts produced by the test; scanned for canaries at the end."""
    from airflow_provider_bitrix24.client import limits, oauth

    portal.reset()
    limits.forget_limits()
    oauth.forget_oauth_sessions()
    for name in ("urllib3", "httpx", "httpcore", "airflow_provider_bitrix24"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    texts: list[str] = []
    secrets = [CODE, CLIENT_SECRET, ACCESS, REFRESH, BAD_REFRESH]
    yield texts, secrets
    texts.append(logs())
    found = {secret for secret in secrets for text in texts if secret in text}
    assert not found, f"secrets leaked: {sorted(found)}"
    assert len(texts) > 1, "the test collected nothing to scan"


def _exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _webhook_conn(monkeypatch, host: str, **extra) -> Bitrix24Hook:
    set_conn(monkeypatch, "leak", {"conn_type": "bitrix24", "host": host, "extra": extra})
    return Bitrix24Hook(bitrix24_conn_id="leak", retry_policy=NO_RETRY)


def _oauth_conn(monkeypatch, portal, refresh: str, access: str | None) -> Bitrix24Hook:
    extra = {
        "auth_type": "oauth",
        "client_id": portal.oauth_client_id,
        "client_secret": CLIENT_SECRET,
        "refresh_token": refresh,
        "oauth_url": portal.oauth_url,
    }
    if access:
        extra["access_token"] = access
    # One connection id per test: rotated tokens kept in the Variable of one test must not feed another.
    conn_id = f"leak_oauth_{refresh[-4:]}"
    set_conn(monkeypatch, conn_id, {"conn_type": "bitrix24", "host": portal.base_url, "extra": extra})
    return Bitrix24Hook(bitrix24_conn_id=conn_id, retry_policy=NO_RETRY)


def _call(hook: Bitrix24Hook, texts: list[str]) -> str:
    """Call ``profile``, collect every text the call shows; return ``"ok"`` or the error code (the path taken)."""
    texts += [repr(hook), repr(hook.client), repr(hook.config), repr(hook.client.engine)]
    try:
        texts.append(json.dumps(hook.call("profile")))
    except Bitrix24Error as exc:
        texts += _exception_texts(exc)
        return exc.code
    return "ok"


_PATHS = [
    (None, "ok"),
    ({"kind": "error", "error": "NO_AUTH_FOUND", "status": 401}, "NO_AUTH_FOUND"),
    ({"kind": "error", "error": "INTERNAL_SERVER_ERROR", "status": 500}, "INTERNAL_SERVER_ERROR"),
    ({"kind": "hang", "delay": 10 * TIMEOUT}, "TIMEOUT"),
    ({"kind": "drop_after"}, "CONNECTION_FAILED"),
]


@pytest.mark.parametrize(("fault", "outcome"), _PATHS, ids=["success", "401", "500", "timeout", "dropped"])
def test_webhook_paths(portal, collected, monkeypatch, fault, outcome):
    texts, _ = collected
    if fault:
        portal.inject_fault("profile", count=1, **fault)
    hook = _webhook_conn(monkeypatch, f"{portal.base_url}/rest/1/{CODE}/", timeout=TIMEOUT)
    assert _call(hook, texts) == outcome  # the path meant, scanned for secrets by the fixture


def test_webhook_connection_refused(collected, monkeypatch):
    texts, _ = collected
    _call(_webhook_conn(monkeypatch, f"http://127.0.0.1:{_closed_port()}/rest/1/{CODE}/"), texts)
    assert any("CONNECTION_FAILED" in t for t in texts)


def test_oauth_refresh_and_rotation(portal, collected, monkeypatch):
    texts, secrets = collected
    portal.expire_access_tokens()
    hook = _oauth_conn(monkeypatch, portal, REFRESH, ACCESS)
    _call(hook, texts)
    session = hook.client.engine.oauth
    assert session is not None
    assert session.refresh_count == 1
    # The rotated tokens are secrets too.
    secrets += [session.pair.access_token or "", session.pair.refresh_token]
    portal.inject_fault("profile", "error", count=1, error="INTERNAL_SERVER_ERROR", status=500)
    _call(hook, texts)


def test_oauth_invalid_grant(portal, collected, monkeypatch):
    texts, _ = collected
    portal.expire_access_tokens()
    hook = _oauth_conn(monkeypatch, portal, BAD_REFRESH, ACCESS)
    _call(hook, texts)
    assert any(t.startswith("invalid_grant") for t in texts)


def test_async_paths(portal, collected):
    texts, _ = collected

    async def scenario(host: str, fault: dict | None) -> str:
        if fault:
            portal.inject_fault("profile", count=1, **fault)
        config = parse_connection(host=host, extra={"timeout": TIMEOUT})
        async with AsyncBitrix24Client(config, retry_policy=NO_RETRY) as client:
            texts.append(repr(client))
            try:
                texts.append(json.dumps(await client.call("profile")))
            except Bitrix24Error as exc:
                texts.extend(_exception_texts(exc))
                return exc.code
        return "ok"

    good = f"{portal.base_url}/rest/1/{CODE}/"
    refused = f"http://127.0.0.1:{_closed_port()}/rest/1/{CODE}/"
    outcomes = [asyncio.run(scenario(good, fault)) for fault, _ in _PATHS[:4]]
    outcomes.append(asyncio.run(scenario(refused, None)))
    assert outcomes == [outcome for _, outcome in _PATHS[:4]] + ["CONNECTION_FAILED"]


def test_dag_run_leaves_no_secret_in_xcom_logs_or_database(portal, collected, monkeypatch, airflow_db):
    texts, _ = collected
    set_conn(monkeypatch, "bitrix24_default", {"conn_type": "bitrix24", "host": f"{portal.base_url}/rest/1/{CODE}/"})
    result = run_dag("example_bitrix24_quick_answer")
    assert result.state == "success", result.tasks
    assert result.xcoms["save_one"] == [SEED.new_text_message_id]
    texts.append(repr(result.xcoms))
    home = Path(AIRFLOW_HOME)
    for path in [*home.glob("*.db"), *home.rglob("logs/**/*")]:
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
