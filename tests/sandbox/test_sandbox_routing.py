"""Routing, parameter encodings, authentication, scopes, portal-wide flags and the success envelope."""

from __future__ import annotations

import re

import pytest

from airflow_provider_bitrix24.sandbox import SEED, WebhookSpec

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


def test_success_envelope_has_result_and_time_block_when_called_through_webhook(http, portal):
    response = http.post(portal.webhook_url + "profile", json={})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert int(response.headers["Content-Length"]) == len(response.content)
    body = response.json()
    assert list(body) == ["result", "time"]
    assert body["result"]["ID"] == "1"
    assert body["result"]["ADMIN"] is True
    timing = body["time"]
    assert list(timing) == [
        "start", "finish", "duration", "processing", "date_start", "date_finish", "operating_reset_at", "operating",
    ]  # fmt: skip
    assert isinstance(timing["start"], float)
    assert timing["finish"] >= timing["start"]
    assert ISO.match(timing["date_start"])
    assert timing["date_start"].endswith("+03:00")
    assert isinstance(timing["operating"], float)
    assert isinstance(timing["operating_reset_at"], int)
    assert timing["operating_reset_at"] > timing["start"]


def test_connection_is_kept_alive_between_calls(http, portal):
    first = http.get(portal.webhook_url + "server.time")
    second = http.get(portal.webhook_url + "server.time")
    assert first.raw.version == 11
    assert first.headers.get("Connection", "").lower() != "close"
    assert second.status_code == 200
    assert portal.stats()["requests"] == 2


@pytest.mark.parametrize("suffix", ["profile", "profile.json", "profile/", "profile.json/", "PROFILE", "Profile.JSON"])
@pytest.mark.parametrize("verb", ["GET", "POST"])
def test_method_route_variants_reach_the_method(http, portal, suffix, verb):
    response = http.request(verb, portal.webhook_url + suffix)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["ID"] == "1"
    assert portal.stats()["by_method"] == {"profile": 1}


def test_webhook_path_without_user_id_is_method_not_found(http, portal):
    response = http.post(f"{portal.base_url}/rest/{portal.webhook_code}/profile")
    assert response.status_code == 404
    assert response.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


def test_unknown_method_is_method_not_found(api):
    assert api.error("crm.deal.nonexistent") == (
        404,
        {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
    )


def test_non_rest_path_is_a_plain_404(http, portal):
    response = http.get(portal.base_url + "/index.php")
    assert response.status_code == 404
    assert "text/html" in response.headers["Content-Type"]


# -- parameters ------------------------------------------------------------------------------------------------


def _session_of(response):
    assert response.status_code == 200, response.text
    return response.json()["result"]["sessionId"]


def test_parameters_arrive_from_query_json_form_and_multipart(http, portal):
    url = portal.webhook_url + "imopenlines.session.history.get"
    assert _session_of(http.get(url, params={"SESSION_ID": 343})) == 343
    assert _session_of(http.post(url, json={"SESSION_ID": 343})) == 343
    assert _session_of(http.post(url, data={"SESSION_ID": "343"})) == 343
    assert _session_of(http.post(url, files={"SESSION_ID": (None, "343")})) == 343


def test_body_parameters_override_query_parameters(http, portal):
    url = portal.webhook_url + "imopenlines.session.history.get?SESSION_ID=321&CHAT_ID=1777"
    assert _session_of(http.post(url, data={"SESSION_ID": "343"})) == 343
    # Query and body are merged: CHAT_ID from the query, SESSION_ID emptied by the body -> latest of chat 1777.
    assert _session_of(http.post(url, data={"SESSION_ID": ""})) == SEED.sales_session_id


def test_php_bracket_syntax_in_form_bodies(http, portal):
    body = "cmd[me]=profile&cmd[check]=method.get%3Fname%3Dprofile&halt=0"
    response = http.post(
        portal.webhook_url + "batch", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    result = response.json()["result"]
    assert result["result"]["me"]["ID"] == "1"
    assert result["result"]["check"] == {"isExisting": True, "isAvailable": True}


# -- authentication --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    ["query-auth", "json-auth", "form-auth", "access_token", "bearer"],
)
def test_oauth_token_is_accepted_where_the_portal_reads_it(http, portal, how):
    token = portal.oauth_access_token
    url = portal.base_url + "/rest/profile"
    if how == "query-auth":
        response = http.get(url, params={"auth": token})
    elif how == "json-auth":
        response = http.post(url, json={"auth": token})
    elif how == "form-auth":
        response = http.post(url, data={"auth": token})
    elif how == "access_token":
        response = http.post(url, data={"access_token": token})
    else:
        response = http.post(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["ID"] == "1"
    assert token not in response.text


def _error(response):
    return response.status_code, response.json()


def test_no_credential_is_no_auth_found(http, portal):
    assert _error(http.post(portal.base_url + "/rest/profile")) == (
        401,
        {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
    )


@pytest.mark.parametrize("path", ["/rest/1/wrong-code-0000/profile", "/rest/7/sandbox-webhook-0000/profile"])
def test_wrong_webhook_is_invalid_credentials_401_by_default(http, portal, path):
    # What real portals answer (recorded); the docs' table attributes wrong webhook codes to NO_AUTH_FOUND.
    status, body = _error(http.post(portal.base_url + path))
    assert (status, body) == (401, {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"})


def test_wrong_webhook_is_no_auth_found_in_docs_style(http, portal):
    portal.configure(auth_error_style="docs")
    assert _error(http.post(portal.base_url + "/rest/1/wrong-code-0000/profile")) == (
        401,
        {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
    )


def test_auth_error_style_takes_only_known_names(portal):
    with pytest.raises(ValueError, match="auth_error_style must be one of"):
        portal.configure(auth_error_style="strict")
    assert portal.config.auth_error_style == "code"


def test_unknown_oauth_token_is_invalid_token(http, portal):
    status, body = _error(http.post(portal.base_url + "/rest/profile", json={"auth": "not-a-token"}))
    assert status == 401
    assert body["error"] == "invalid_token"
    assert set(body) == {"error", "error_description"}


def test_expired_oauth_token_is_expired_token(http, portal):
    tokens = portal.issue_oauth_tokens(expired=True)
    expected = (401, {"error": "expired_token", "error_description": "The access token provided has expired"})
    assert _error(http.post(portal.base_url + "/rest/profile", json={"auth": tokens["access_token"]})) == expected
    fresh = portal.issue_oauth_tokens()
    assert http.post(portal.base_url + "/rest/profile", json={"auth": fresh["access_token"]}).status_code == 200
    portal.expire_access_tokens()
    assert _error(http.post(portal.base_url + "/rest/profile", json={"auth": fresh["access_token"]})) == expected


def test_access_token_ttl_applies(http, portal):
    portal.configure(access_token_ttl=0.0)
    status, body = _error(http.post(portal.base_url + "/rest/profile", json={"auth": portal.oauth_access_token}))
    assert (status, body["error"]) == (401, "expired_token")


def test_webhook_of_unknown_employee_cannot_authorize(http, portal):
    portal.configure(webhooks=[*portal.config.webhooks, WebhookSpec(77, "ghost-0000", ("user",))])
    status, body = _error(http.post(portal.base_url + "/rest/77/ghost-0000/profile"))
    assert (status, body["error"]) == (401, "authorization_error")


# -- scopes ----------------------------------------------------------------------------------------------------


def test_missing_scope_is_insufficient_scope_401_with_webhook_wording(http, portal):
    response = http.post(portal.limited_webhook_url + "imopenlines.dialog.get", json={"CHAT_ID": 1763})
    assert _error(response) == (
        401,
        {
            "error": "insufficient_scope",
            "error_description": "The request requires higher privileges than provided by the webhook token",
        },
    )


def test_missing_scope_is_insufficient_scope_with_oauth_wording(http, portal):
    portal.configure(oauth_scopes=["user"])
    response = http.post(portal.base_url + "/rest/imopenlines.dialog.get", json={"auth": portal.oauth_access_token})
    status, body = _error(response)
    assert status == 401
    assert body["error_description"] == "The request requires higher privileges than provided by the access token"


@pytest.mark.parametrize(
    "method", ["profile", "scope", "method.get", "methods", "server.time", "app.info", "user.admin"]
)
def test_global_methods_need_no_scope(api, portal, method):
    portal.configure(webhooks=[WebhookSpec(1, "bare-0000", ())])
    api.ok(method, base=f"{portal.base_url}/rest/1/bare-0000/")


def test_user_current_needs_a_user_scope(api, portal):
    portal.configure(webhooks=[WebhookSpec(1, "bare-0000", ()), WebhookSpec(2, "brief-0000", ("user_brief",))])
    assert api.error("user.current", base=f"{portal.base_url}/rest/1/bare-0000/")[1]["error"] == "insufficient_scope"
    assert api.ok("user.current", base=f"{portal.base_url}/rest/2/brief-0000/")["ID"] == "2"


# -- portal-wide flags -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "status", "error", "description"),
    [
        ("rest_unavailable", 403, "ACCESS_DENIED", "REST API is available only on commercial plans"),
        ("overloaded", 503, "OVERLOAD_LIMIT", "REST API is blocked due to overload"),
        ("portal_deleted", 410, "PORTAL_DELETED", "Portal was deleted"),
        ("subscription_ended", 401, "PAYMENT_REQUIRED", "Subscription has been ended"),
    ],
)
def test_portal_flags_refuse_every_call(api, portal, flag, status, error, description):
    portal.configure(**{flag: True})
    assert api.error("profile") == (status, {"error": error, "error_description": description})
    assert portal.stats()["errors"] == {error: 1}


def test_app_user_restriction_applies_to_oauth_only(http, api, portal):
    portal.configure(app_user_restricted=True)
    status, body = _error(http.post(portal.base_url + "/rest/profile", json={"auth": portal.oauth_access_token}))
    assert (status, body["error"]) == (403, "user_access_error")
    assert api.ok("profile")["ID"] == "1"


def test_https_is_required_only_when_configured(http, api, portal):
    assert api.ok("profile")["ID"] == "1"
    portal.configure(https_required=True)
    assert api.error("profile") == (400, {"error": "INVALID_REQUEST", "error_description": "Https required."})
    forwarded = http.post(portal.webhook_url + "profile", headers={"X-Forwarded-Proto": "https"})
    assert forwarded.status_code == 200
    oauth = http.post(portal.base_url + "/rest/profile", json={"auth": portal.oauth_access_token})
    assert oauth.status_code == 200


# -- connection-test methods -----------------------------------------------------------------------------------


def test_scope_lists_granted_scopes_and_full_lists_the_portal(api, portal):
    assert api.ok("scope") == ["imopenlines", "im", "imbot", "user", "crm"]
    assert api.ok("scope", base=portal.limited_webhook_url) == ["user"]
    full = api.ok("scope", {"full": True})
    assert {"imopenlines", "lists", "task", "user"} <= set(full)


def test_method_get_reports_existence_and_availability(api, portal):
    name = "imopenlines.message.quick.save"
    assert api.ok("method.get", {"name": name}) == {"isExisting": True, "isAvailable": True}
    assert api.ok("method.get", {"name": name.upper()}) == {"isExisting": True, "isAvailable": True}
    assert api.ok("method.get", {"name": name}, base=portal.limited_webhook_url) == {
        "isExisting": True,
        "isAvailable": False,
    }
    assert api.ok("method.get", {"name": "no.such.method"}) == {"isExisting": False, "isAvailable": False}
    assert api.ok("method.get") == {"isExisting": False, "isAvailable": False}


def test_methods_lists_callable_methods(api, portal):
    assert "imopenlines.session.history.get" in api.ok("methods")
    limited = api.ok("methods", base=portal.limited_webhook_url)
    assert "user.current" in limited
    assert "imopenlines.session.history.get" not in limited
    assert api.ok("methods", {"scope": "imopenlines"}) == [
        "imopenlines.message.quick.save",
        "imopenlines.session.history.get",
        "imopenlines.dialog.get",
        "imopenlines.session.open",
        "imopenlines.crm.chat.get",
    ]


DOCS_USER_CURRENT = [
    "ID", "ACTIVE", "NAME", "LAST_NAME", "EMAIL", "LAST_LOGIN", "DATE_REGISTER", "IS_ONLINE", "TIMESTAMP_X",
    "LAST_ACTIVITY_DATE", "PERSONAL_GENDER", "PERSONAL_BIRTHDAY", "UF_EMPLOYMENT_DATE", "UF_DEPARTMENT",
]  # fmt: skip


def test_server_time_user_admin_and_user_current(api, portal):
    assert ISO.match(api.ok("server.time"))
    assert api.ok("user.admin") is True
    assert api.ok("user.admin", base=portal.limited_webhook_url) is False
    me = api.ok("user.current")
    assert (me["ID"], me["NAME"], me["LAST_NAME"], me["UF_DEPARTMENT"]) == ("1", "Anna", "Admin", [1])
    # Every field of the documentation's real user.current answer (batch page, 2024) is there.
    assert set(DOCS_USER_CURRENT) <= set(me)
    assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d", me["TIMESTAMP_X"])
    assert (me["PERSONAL_BIRTHDAY"], me["UF_EMPLOYMENT_DATE"]) == ("", "")


def test_app_info_differs_between_webhook_and_oauth(http, api, portal):
    assert api.ok("app.info") == {"SCOPE": ["imopenlines", "im", "imbot", "user", "crm"], "LICENSE": "en_project"}
    response = http.post(portal.base_url + "/rest/app.info", json={"auth": portal.oauth_access_token})
    info = response.json()["result"]
    assert info["CODE"] == portal.oauth_client_id
    assert info["INSTALLED"] is True


def test_list_method_pages_with_next_and_total(api, portal, http):
    portal.configure(list_page_size=2)
    first = http.post(portal.webhook_url + "user.get", json={}).json()
    assert [u["ID"] for u in first["result"]] == ["1", "2"]
    assert (first["next"], first["total"]) == (2, 3)
    assert list(first) == ["result", "next", "total", "time"]
    last = http.post(portal.webhook_url + "user.get", json={"start": 2}).json()
    assert [u["ID"] for u in last["result"]] == ["3"]
    assert "next" not in last
    assert last["total"] == 3
    uncounted = http.post(portal.webhook_url + "user.get", json={"start": -1}).json()
    assert uncounted["total"] == 0
    assert "next" not in uncounted


# -- logging ---------------------------------------------------------------------------------------------------


def test_requests_are_not_logged_by_default(api, capfd):
    api.ok("profile")
    assert capfd.readouterr().err == ""


def test_verbose_log_masks_the_webhook_code(api, portal, capfd):
    portal.configure(verbose=True)
    api.ok("profile")
    api.post("crm.unknown")
    err = capfd.readouterr().err
    assert "POST /rest/1/***/profile -> 200" in err
    assert "POST /rest/1/***/crm.unknown -> 404" in err
    assert portal.webhook_code not in err
