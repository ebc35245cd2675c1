"""
A redirect never hands the credential to another host.

The portal answers with a redirect to a second loopback server (another origin, as a TLS-inspecting filter, a
login page in front of an on-premise portal or anyone would be); that server records whatever reaches it. The
client must fail with a clear error telling the user to update the connection, and the second server must see
nothing: no webhook code, no token.
"""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_bitrix24.client import (
    AsyncBitrix24Client,
    Bitrix24Client,
    Bitrix24PortalMovedError,
    RetryPolicy,
    limits,
    oauth,
    parse_connection,
)
from tests.replay import WEBHOOK_CODE, ReplayServer

ACCESS = "fake-access-token-redirect-0000"
REFRESH = "fake-refresh-token-redirect-0000"
SECRET = "fake-client-secret-redirect-0000"


@pytest.fixture
def servers():
    limits.forget_limits()
    oauth.forget_oauth_sessions()
    with ReplayServer() as portal, ReplayServer() as elsewhere:
        yield portal, elsewhere
    oauth.forget_oauth_sessions()


def _config(portal: ReplayServer, kind: str):
    if kind == "webhook":
        return parse_connection(host=portal.webhook_url, extra={"max_retries": 2})
    return parse_connection(
        host=portal.base_url,
        extra={
            "auth_type": "oauth",
            "client_id": "local.redirect.test",
            "client_secret": SECRET,
            "refresh_token": REFRESH,
            "access_token": ACCESS,
            "oauth_url": portal.oauth_url,
            "max_retries": 2,
        },
    )


def _seen_secrets(server: ReplayServer) -> list[str]:
    found = []
    for request in server.requests:
        text = request.path + repr(request.query) + request.body.decode("utf-8", "replace")
        found += [s for s in (WEBHOOK_CODE, ACCESS, REFRESH, SECRET) if s in text]
    return found


@pytest.mark.parametrize("kind", ["webhook", "oauth"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_to_another_host_delivers_nothing_there(servers, kind, status):
    portal, elsewhere = servers
    portal.queue(status, b"", {"Location": f"{elsewhere.base_url}/rest/profile"})
    client = Bitrix24Client(_config(portal, kind), retry_policy=RetryPolicy(max_retries=2, base_delay=0.01))
    with client, pytest.raises(Bitrix24PortalMovedError) as info:
        client.call("profile")
    assert elsewhere.requests == []
    assert _seen_secrets(elsewhere) == []
    text = str(info.value)
    assert f"HTTP {status}" in text
    assert "update the connection's host" in text
    assert WEBHOOK_CODE not in text
    assert ACCESS not in text
    assert len(portal.requests) == 1  # a permanent error: not retried


def test_redirect_is_refused_by_the_async_client_too(servers):
    portal, elsewhere = servers
    portal.queue(302, b"", {"Location": f"{elsewhere.base_url}/rest/1/{WEBHOOK_CODE}/profile"})

    async def call() -> None:
        async with AsyncBitrix24Client(_config(portal, "oauth")) as client:
            await client.call("profile")

    with pytest.raises(Bitrix24PortalMovedError):
        asyncio.run(call())
    assert elsewhere.requests == []


def test_later_calls_stay_on_the_configured_host(servers):
    portal, elsewhere = servers
    portal.queue(302, b"", {"Location": f"{elsewhere.base_url}/rest/profile"})
    portal.queue(200, {"result": {"ID": "1"}, "time": {}})
    client = Bitrix24Client(_config(portal, "webhook"))
    with client:
        with pytest.raises(Bitrix24PortalMovedError):
            client.call("profile")
        assert client.call("profile") == {"ID": "1"}
    assert elsewhere.requests == []
    assert [r.rest_method for r in portal.requests] == ["profile", "profile"]
