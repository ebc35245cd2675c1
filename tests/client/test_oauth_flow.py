"""The OAuth refresh flow: one chain per portal, application and first refresh token; races and store failures."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from airflow_provider_bitrix24.client import (
    AsyncBitrix24Client,
    Bitrix24AuthError,
    Bitrix24TokenStoreError,
    MemoryTokenStore,
    oauth,
    parse_connection,
)
from airflow_provider_bitrix24.client.config import OAuthCredentials
from airflow_provider_bitrix24.client.oauth import (
    RACE_WAIT,
    SAVE_ATTEMPTS,
    LoadTokens,
    NewSecrets,
    OAuthSession,
    SaveTokens,
    TokenAnswer,
    TokenPair,
    TokenRequest,
    Wait,
    chain_id,
    shared_oauth_session,
)

CREDS = OAuthCredentials(
    client_id="local.flow.test",
    client_secret="fake-secret-flow-0000",
    refresh_token="fake-refresh-origin-0000",
    access_token="fake-access-origin-0000",
)


def _answer(access: str, refresh: str, status: int = 200) -> TokenAnswer:
    return TokenAnswer(
        status, json.dumps({"access_token": access, "refresh_token": refresh, "expires_in": 3600}).encode()
    )


def _invalid_grant() -> TokenAnswer:
    return TokenAnswer(400, b'{"error": "invalid_grant", "error_description": "Invalid grant"}')


class FlowRunner:
    """Drive a refresh flow by hand, answering each action from the given handlers, and record the actions."""

    def __init__(self, **handlers):
        self.handlers = handlers
        self.actions: list[object] = []

    def run(self, flow):
        value, error = None, None
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            self.actions.append(action)
            value, error = None, None
            handler = self.handlers.get(type(action).__name__)
            if handler is not None:
                try:
                    value = handler(action)
                except Exception as exc:
                    error = exc


def test_chain_id_depends_on_portal_app_and_first_refresh_token_not_on_the_connection_id():
    same = chain_id("portal.bitrix24.com", CREDS)
    assert same == chain_id("portal.bitrix24.com", CREDS)
    assert same != chain_id("other.bitrix24.com", CREDS)
    from dataclasses import replace

    assert same != chain_id("portal.bitrix24.com", replace(CREDS, refresh_token="fake-refresh-new-0000"))
    assert same != chain_id("portal.bitrix24.com", replace(CREDS, client_id="local.other"))
    assert CREDS.refresh_token not in same


def test_refresh_persists_the_new_pair_before_using_it():
    session = OAuthSession(CREDS, "chain")
    order: list[str] = []
    runner = FlowRunner(
        LoadTokens=lambda a: None,
        TokenRequest=lambda a: _answer("fake-access-new-0001", "fake-refresh-new-0001"),
        SaveTokens=lambda a: order.append(f"save:{session.pair.access_token}"),
        NewSecrets=lambda a: order.append("mask"),
    )
    runner.run(session.refresh_flow(CREDS.access_token))
    assert order == ["mask", "save:fake-access-origin-0000"]  # masked, then saved while the old pair is in use
    assert session.pair.access_token == "fake-access-new-0001"
    assert session.pair.refreshed_at is not None
    (request,) = [a for a in runner.actions if isinstance(a, TokenRequest)]
    assert request.params["refresh_token"] == CREDS.refresh_token
    assert "fake-secret-flow-0000" not in repr(request)


def test_a_token_refreshed_meanwhile_in_this_process_is_not_refreshed_again():
    session = OAuthSession(CREDS, "chain")
    session.pair = TokenPair("fake-access-other-0001", "fake-refresh-other-0001", refreshed_at=time.time())
    runner = FlowRunner()
    runner.run(session.refresh_flow(CREDS.access_token))
    assert runner.actions == []


def test_a_lost_race_waits_for_the_winners_pair_and_adopts_it():
    """Two processes refreshed the same token; the portal refused the loser. It must not fail, nor re-authorise."""
    session = OAuthSession(CREDS, "chain")
    winner = TokenPair("fake-access-winner-01", "fake-refresh-winner-01", refreshed_at=time.time())
    loads = iter([None, None, None, winner])
    runner = FlowRunner(
        LoadTokens=lambda a: None if a.previous else next(loads), TokenRequest=lambda a: _invalid_grant()
    )
    runner.run(session.refresh_flow(CREDS.access_token))
    assert session.pair == winner
    assert sum(isinstance(a, Wait) for a in runner.actions) == 3
    assert not any(isinstance(a, SaveTokens) for a in runner.actions)
    assert session.refresh_count == 0


def test_invalid_grant_with_no_newer_pair_is_a_permanent_error_that_says_so():
    session = OAuthSession(CREDS, "chain")
    runner = FlowRunner(LoadTokens=lambda a: None, TokenRequest=lambda a: _invalid_grant())
    with pytest.raises(Bitrix24AuthError) as info:
        runner.run(session.refresh_flow(CREDS.access_token))
    err = info.value
    assert err.code == "invalid_grant"
    assert not err.retryable
    assert f"no newer pair appeared in the token store within {RACE_WAIT:g} s" in str(err)
    waited = sum(a.seconds for a in runner.actions if isinstance(a, Wait))
    assert waited == pytest.approx(RACE_WAIT)


def test_a_pair_that_cannot_be_stored_is_retried_then_fails_loudly_naming_the_store():
    session = OAuthSession(CREDS, "chain")

    def refuse(action):
        raise oauth.token_store_error("Variable bitrix24_oauth__chain", OSError("read-only"))

    runner = FlowRunner(
        LoadTokens=lambda a: None,
        TokenRequest=lambda a: _answer("fake-access-new-0002", "fake-refresh-new-0002"),
        SaveTokens=refuse,
    )
    with pytest.raises(Bitrix24TokenStoreError) as info:
        runner.run(session.refresh_flow(CREDS.access_token))
    assert sum(isinstance(a, SaveTokens) for a in runner.actions) == SAVE_ATTEMPTS
    text = str(info.value)
    assert text.startswith("TOKEN_NOT_STORED:")
    assert "Variable bitrix24_oauth__chain" in text
    assert "refresh_token" in text
    assert "fake-refresh-new-0002" not in text
    assert not info.value.retryable
    # This process keeps the new pair (its old refresh token is spent); the others need it stored.
    assert session.pair.refresh_token == "fake-refresh-new-0002"


def test_new_secrets_are_announced_before_anything_can_log_them():
    session = OAuthSession(CREDS, "chain")
    runner = FlowRunner(LoadTokens=lambda a: None, TokenRequest=lambda a: _answer("fake-access-n3", "fake-refresh-n3"))
    runner.run(session.refresh_flow(CREDS.access_token))
    (secrets,) = [a for a in runner.actions if isinstance(a, NewSecrets)]
    assert set(secrets.values) == {"fake-access-n3", "fake-refresh-n3"}
    assert "fake-access-n3" not in repr(secrets)
    assert "fake-access-n3" not in repr(session.pair)


def test_a_new_refresh_token_in_the_connection_starts_a_new_shared_session():
    """A long-lived process (the triggerer) must pick up credentials replaced in the connection at once."""
    oauth.forget_oauth_sessions()
    from dataclasses import replace

    first = shared_oauth_session("portal.bitrix24.com", CREDS)
    first.pair = TokenPair("fake-access-rotated", "fake-refresh-rotated", refreshed_at=time.time())
    assert shared_oauth_session("portal.bitrix24.com", CREDS) is first
    renewed = shared_oauth_session("portal.bitrix24.com", replace(CREDS, refresh_token="fake-refresh-reauth-0001"))
    assert renewed is not first
    assert renewed.pair.refresh_token == "fake-refresh-reauth-0001"
    resecreted = shared_oauth_session("portal.bitrix24.com", replace(CREDS, client_secret="fake-secret-new-0001"))
    assert resecreted is first
    assert first.credentials.client_secret == "fake-secret-new-0001"
    oauth.forget_oauth_sessions()


def test_async_refresh_never_waits_for_a_thread_holding_the_sessions_thread_lock(sandbox):
    """
    The triggerer's deadlock: a thread holding the refresh lock waits for the event loop (Airflow's supervisor
    channel), while the loop waits for that lock. The async path must not touch the thread lock at all.
    """
    tokens = sandbox.issue_oauth_tokens(expired=True)
    config = parse_connection(
        host=sandbox.base_url,
        extra={
            "auth_type": "oauth",
            "client_id": sandbox.oauth_client_id,
            "client_secret": sandbox.oauth_client_secret,
            "refresh_token": tokens["refresh_token"],
            "access_token": tokens["access_token"],
            "oauth_url": sandbox.oauth_url,
        },
    )
    store = MemoryTokenStore()

    async def main() -> tuple[dict, float]:
        stalls = [0.0]
        running = True

        async def heartbeat() -> None:
            last = time.monotonic()
            while running:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                stalls[0] = max(stalls[0], now - last)
                last = now

        beat = asyncio.ensure_future(heartbeat())
        async with AsyncBitrix24Client(config, token_store=store) as client:
            session = client.engine.oauth
            assert session is not None
            held = threading.Event()
            release = threading.Event()

            def hold() -> None:
                with session.thread_lock:
                    held.set()
                    release.wait(10)

            holder = threading.Thread(target=hold, daemon=True)
            holder.start()
            held.wait(5)
            try:
                profile = await asyncio.wait_for(client.call("profile"), 5)
            finally:
                release.set()
                holder.join(5)
        running = False
        await beat
        return profile, stalls[0]

    profile, stall = asyncio.run(main())
    assert profile["ID"]
    assert store.pair is not None
    assert store.pair.refresh_token != tokens["refresh_token"]
    # Taking the thread lock on the loop would stall it until the holder gives up (10 s); scheduling noise on a
    # loaded machine stays far below 2 s.
    assert stall < 2.0, f"the event loop stalled {stall:.2f} s"


def test_the_http_client_is_built_off_the_event_loop(sandbox, monkeypatch):
    """Building it reads the CA bundle and imports the transport stack: that runs in a worker thread."""
    built_on: list[int] = []
    original = AsyncBitrix24Client._build_http

    def build(self):
        built_on.append(threading.get_ident())
        return original(self)

    monkeypatch.setattr(AsyncBitrix24Client, "_build_http", build)
    config = parse_connection(host=sandbox.webhook_url)

    async def main() -> tuple[int, list, int]:
        async with AsyncBitrix24Client(config) as client:
            answers = list(await asyncio.gather(client.call("profile"), client.call("server.time")))
            first = client._http
            answers.append(await client.call("profile"))
            assert client._http is first  # built once, then reused
        return threading.get_ident(), answers, len(built_on)

    loop_thread, answers, builds = asyncio.run(main())
    assert answers[0]["ID"] == answers[2]["ID"]
    assert answers[1]
    assert built_on
    assert loop_thread not in built_on
    assert builds <= 2  # two first calls at once may both build; the spare one is closed


def test_a_refused_refresh_token_tries_the_pair_earlier_versions_kept_before_waiting():
    session = OAuthSession(CREDS, "chain")
    kept = TokenPair("fake-access-kept-0001", "fake-refresh-kept-0001")
    answers = iter([_invalid_grant(), _answer("fake-access-new-0004", "fake-refresh-new-0004")])
    runner = FlowRunner(
        LoadTokens=lambda a: kept if a.previous else None,
        TokenRequest=lambda a: next(answers),
        SaveTokens=lambda a: None,
    )
    runner.run(session.refresh_flow(CREDS.access_token))
    requests = [a for a in runner.actions if isinstance(a, TokenRequest)]
    assert [r.params["refresh_token"] for r in requests] == [CREDS.refresh_token, kept.refresh_token]
    assert session.pair.refresh_token == "fake-refresh-new-0004"
    assert not any(isinstance(a, Wait) for a in runner.actions)
    assert any(isinstance(a, LoadTokens) and a.previous for a in runner.actions)


def test_token_answers_do_not_show_their_tokens_in_repr():
    from airflow_provider_bitrix24.client.core import HttpResponse

    body = b'{"access_token": "canary-access-0000", "refresh_token": "canary-refresh-0000"}'
    for answer in (oauth.TokenAnswer(200, body), HttpResponse(200, body)):
        assert answer.body == body
        assert "canary" not in repr(answer)
