"""The token endpoint: refresh with rotation, authorization codes and its errors."""

from __future__ import annotations

import json
import re
import time

import pytest

TOKEN_FIELDS = {
    "access_token", "client_endpoint", "domain", "expires", "expires_in", "member_id", "refresh_token", "scope",
    "server_endpoint", "status", "user_id",
}  # fmt: skip
#: Real tokens are 70 characters of lower-case letters and digits.
REAL_TOKEN = re.compile(r"^[a-z0-9]{70}$")
#: A real portal's member_id: 32 lower-case hex characters.
REAL_MEMBER_ID = re.compile(r"^[0-9a-f]{32}$")


def _refresh(http, portal, refresh_token, *, post=False, **overrides):
    params = {
        "grant_type": "refresh_token",
        "client_id": portal.oauth_client_id,
        "client_secret": portal.oauth_client_secret,
        "refresh_token": refresh_token,
        **overrides,
    }
    params = {k: v for k, v in params.items() if v is not None}
    if post:
        return http.post(portal.oauth_url, data=params)
    return http.get(portal.oauth_url, params=params)


def _profile(http, portal, access_token):
    return http.post(portal.base_url + "/rest/profile", json={"auth": access_token})


def test_refresh_answers_as_the_real_authorization_server(http, portal):
    before = time.time()
    response = _refresh(http, portal, portal.oauth_refresh_token)
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == TOKEN_FIELDS
    assert tokens["client_endpoint"] == portal.base_url + "/rest/"
    assert (tokens["domain"], tokens["server_endpoint"]) == ("oauth.bitrix.info", "https://oauth.bitrix.info/rest/")
    assert tokens["scope"] == "app"
    assert (tokens["member_id"], tokens["status"], tokens["user_id"]) == (portal.config.member_id, "L", 1)
    assert tokens["expires_in"] == 3600
    assert isinstance(tokens["expires"], int)
    assert before + 3599 <= tokens["expires"] <= time.time() + 3601
    assert REAL_TOKEN.match(tokens["access_token"])
    assert REAL_TOKEN.match(tokens["refresh_token"])
    assert REAL_MEMBER_ID.match(tokens["member_id"])
    assert tokens["refresh_token"] != portal.oauth_refresh_token
    assert portal.oauth_client_secret not in response.text
    assert _profile(http, portal, tokens["access_token"]).status_code == 200


def test_refresh_token_rotates_and_the_old_one_stops_working(http, portal):
    first = _refresh(http, portal, portal.oauth_refresh_token).json()
    reused = _refresh(http, portal, portal.oauth_refresh_token)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    second = _refresh(http, portal, first["refresh_token"], post=True)
    assert second.status_code == 200
    assert second.json()["refresh_token"] not in (first["refresh_token"], portal.oauth_refresh_token)
    assert _refresh(http, portal, first["refresh_token"]).status_code == 400


@pytest.mark.parametrize(
    ("overrides", "status", "error", "described"),
    [
        ({"grant_type": None}, 400, "invalid_request", True),
        ({"grant_type": "password"}, 400, "invalid_request", True),
        ({"client_secret": None}, 400, "invalid_request", True),
        ({"refresh_token": None}, 400, "invalid_request", True),
        # The real server sends these three without a description (bodies recorded by b24pysdk and b24phpsdk).
        ({"client_secret": "wrong-secret"}, 400, "invalid_client", False),
        ({"client_secret": "wrong-sécret"}, 400, "invalid_client", False),
        ({"client_id": "app.other"}, 200, "wrong_client", False),
        ({"refresh_token": "not-a-refresh-token"}, 400, "invalid_grant", False),
    ],
)
def test_token_endpoint_errors(http, portal, overrides, status, error, described):
    params = {"refresh_token": portal.oauth_refresh_token, **overrides}
    response = _refresh(http, portal, **params)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert set(response.json()) == ({"error", "error_description"} if described else {"error"})
    assert "wrong-secret" not in response.text


def test_payment_required_blocks_new_tokens(http, portal):
    portal.configure(payment_required=True)
    response = _refresh(http, portal, portal.oauth_refresh_token)
    assert (response.status_code, response.json()["error"]) == (402, "PAYMENT_REQUIRED")


def test_authorization_code_works_once(http, portal):
    code = portal.issue_authorization_code()
    params = {
        "grant_type": "authorization_code",
        "client_id": portal.oauth_client_id,
        "client_secret": portal.oauth_client_secret,
        "code": code,
    }
    first = http.get(portal.oauth_url, params=params)
    assert first.status_code == 200
    assert set(first.json()) == TOKEN_FIELDS - {"expires", "user_id"}
    assert first.json()["scope"] == "imopenlines,im,imbot,user,crm"
    assert REAL_TOKEN.match(code)
    assert _profile(http, portal, first.json()["access_token"]).status_code == 200
    second = http.get(portal.oauth_url, params=params)
    assert (second.status_code, second.json()["error"]) == (400, "invalid_grant")


def test_unknown_client_id_is_wrong_client_at_http_200_and_issues_nothing(http, portal):
    response = _refresh(http, portal, portal.oauth_refresh_token, client_id="app.other")
    assert (response.status_code, response.json()) == (200, {"error": "wrong_client"})
    # The refresh token was not spent.
    assert _refresh(http, portal, portal.oauth_refresh_token).status_code == 200


def test_expired_access_token_is_recovered_by_a_refresh(http, portal):
    tokens = portal.issue_oauth_tokens(expired=True)
    assert REAL_TOKEN.match(tokens["access_token"])
    assert REAL_TOKEN.match(tokens["refresh_token"])
    assert _profile(http, portal, tokens["access_token"]).json()["error"] == "expired_token"
    fresh = _refresh(http, portal, tokens["refresh_token"]).json()
    assert _profile(http, portal, fresh["access_token"]).json()["result"]["ID"] == "1"


def test_reset_restores_the_initial_pair(http, portal):
    assert _refresh(http, portal, portal.oauth_refresh_token).status_code == 200
    portal.expire_access_tokens()
    assert _profile(http, portal, portal.oauth_access_token).status_code == 401
    portal.reset()
    assert _profile(http, portal, portal.oauth_access_token).status_code == 200
    assert _refresh(http, portal, portal.oauth_refresh_token).status_code == 200
    assert portal.stats()["oauth_requests"] == 1


def test_oauth_connection_json_carries_a_working_pair(http, portal):
    conn = json.loads(portal.airflow_conn_json("oauth"))
    assert conn["conn_type"] == "bitrix24"
    assert conn["host"] == portal.base_url
    extra = conn["extra"]
    assert extra["auth_type"] == "oauth"
    assert extra["oauth_url"] == portal.oauth_url
    assert (extra["client_id"], extra["client_secret"]) == (portal.oauth_client_id, portal.oauth_client_secret)
    assert _profile(http, portal, extra["access_token"]).status_code == 200
    assert _refresh(http, portal, extra["refresh_token"]).status_code == 200
