"""Rotated OAuth tokens are kept in an Airflow Variable and found by the next process."""

from __future__ import annotations

import logging

from airflow_provider_bitrix24.client import oauth
from airflow_provider_bitrix24.client.oauth import TokenPair
from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook, VariableTokenStore
from tests.helpers import oauth_connection, set_conn


def test_store_round_trip(airflow_db):
    store = VariableTokenStore("store_round_trip", logging.getLogger(__name__))
    assert store.key == "bitrix24_oauth_token__store_round_trip"
    assert store.load() is None
    store.save(TokenPair("access-123456", "refresh-123456", 1234.0, 1000.0))
    loaded = store.load()
    assert loaded is not None
    assert (loaded.access_token, loaded.refresh_token, loaded.expires_at, loaded.refreshed_at) == (
        "access-123456",
        "refresh-123456",
        1234.0,
        1000.0,
    )


def test_airflow_masks_the_token_variable_in_its_ui_api_and_cli():
    """Airflow hides a Variable's value only when its key names a secret ("token", "secret", ...)."""
    try:
        from airflow.sdk._shared.secrets_masker import should_hide_value_for_key  # Airflow 3
    except ImportError:
        from airflow.utils.log.secrets_masker import should_hide_value_for_key  # Airflow 2

    store = VariableTokenStore("0123abcd", logging.getLogger(__name__), conn_id="b24")
    assert should_hide_value_for_key(store.key)
    assert store.legacy_key == "bitrix24_oauth__b24"


def test_an_upgrade_finds_the_chain_where_earlier_versions_kept_it(sandbox, monkeypatch, airflow_db):
    """
    Earlier versions kept the rotated pair in ``bitrix24_oauth__<conn_id>``; the connection still holds the pair
    the chain started from, already spent. The first refresh is refused, the pair kept there is tried, and from
    then on the chain lives in its own Variable.
    """
    import requests
    from airflow.models.variable import Variable

    tokens = sandbox.issue_oauth_tokens(expired=True)
    answer = requests.get(
        sandbox.oauth_url,
        params={
            "grant_type": "refresh_token",
            "client_id": sandbox.oauth_client_id,
            "client_secret": sandbox.oauth_client_secret,
            "refresh_token": tokens["refresh_token"],
        },
        timeout=10,
    ).json()
    kept = TokenPair(answer["access_token"], answer["refresh_token"], 1.0, 1.0)  # access expired long ago
    Variable.set("bitrix24_oauth__b24_upgraded", kept.to_json())
    sandbox.expire_access_tokens()
    set_conn(monkeypatch, "b24_upgraded", oauth_connection(sandbox, tokens))

    hook = Bitrix24Hook(bitrix24_conn_id="b24_upgraded")
    assert hook.call("profile")["ID"]
    store = _chain_store(hook)
    assert store.load_previous() is not None
    chained = store.load()
    assert chained is not None
    assert chained.refresh_token not in (tokens["refresh_token"], kept.refresh_token)
    # The spent token (refused), then the kept pair's; never more, and no call was refused for its token.
    assert sandbox.stats()["oauth_requests"] == 3  # including the one this test made to spend the first token
    assert sandbox.stats()["errors"] == {"expired_token": 1}


def _chain_store(hook: Bitrix24Hook) -> VariableTokenStore:
    store = hook.client.engine.token_store
    assert isinstance(store, VariableTokenStore)
    return store


def test_next_process_uses_the_rotated_pair_not_the_stale_extras(sandbox, monkeypatch, airflow_db):
    tokens = sandbox.issue_oauth_tokens(expired=True)
    set_conn(monkeypatch, "b24_rotation", oauth_connection(sandbox, tokens))
    first = Bitrix24Hook(bitrix24_conn_id="b24_rotation")
    first.call("profile")
    store = _chain_store(first)
    assert store.key == f"bitrix24_oauth_token__{oauth.chain_id(first.config.portal_key, first.config.auth)}"
    stored = store.load()
    assert stored is not None
    assert stored.refresh_token != tokens["refresh_token"]

    # A new process: nothing shared in memory, the connection's extras still hold the used-up refresh token.
    oauth.forget_oauth_sessions()
    sandbox.expire_access_tokens()
    second = Bitrix24Hook(bitrix24_conn_id="b24_rotation")
    second.call("profile")
    session = second.client.engine.oauth
    assert session is not None
    assert session.refresh_count == 1  # refreshed with the stored refresh token, which the portal accepted
    assert sandbox.stats()["errors"].get("invalid_grant", 0) == 0
