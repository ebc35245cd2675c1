"""Control endpoints under ``/_sandbox/`` and the matching Python API."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_bitrix24.sandbox import SEED, SandboxConfig, SandboxPortal


def _control(http, portal, verb, name, payload=None):
    response = http.request(verb, f"{portal.base_url}/_sandbox/{name}", json=payload)
    return response.status_code, response.json()


def test_quick_answers_lists_every_answer_with_its_fields(http, portal):
    status, body = _control(http, portal, "GET", "quick-answers")
    assert status == 200
    assert [a["id"] for a in body["items"]] == [1, 2, 3]
    assert set(body["items"][0]) == {"id", "line_id", "message_id", "name", "text", "rating", "section"}
    assert body["items"] == portal.quick_answers()
    assert body["items"][2]["message_id"] == SEED.saved_message_id


def test_messages_endpoint_appends_a_message_now(http, api, portal):
    status, body = _control(http, portal, "POST", "messages", {"session_id": 343, "author_id": 103, "text": "Hi"})
    assert status == 200
    assert body["chat_id"] == SEED.sales_chat_id
    history = api.ok("imopenlines.session.history.get", {"SESSION_ID": 343})
    assert next(iter(history["message"])) == str(body["id"])
    assert history["message"][str(body["id"])]["senderid"] == "103"


def test_delayed_message_gets_its_id_now_and_appears_later(http, api, portal):
    status, body = _control(
        http, portal, "POST", "messages", {"session_id": 343, "author_id": 103, "text": "Later", "delay": 2}
    )
    assert status == 200
    immediate = portal.add_message(343, 3, "Right away")
    assert immediate == body["id"] + 1
    first = api.ok("imopenlines.session.history.get", {"SESSION_ID": 343})["message"]
    assert str(body["id"]) not in first
    assert str(immediate) in first
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        messages = api.ok("imopenlines.session.history.get", {"SESSION_ID": 343})["message"]
        if str(body["id"]) in messages:
            break
        time.sleep(0.05)
    assert messages[str(body["id"])]["text"] == "Later"


def test_delayed_message_is_dropped_by_a_reset(api, portal):
    message_id = portal.add_message(343, 103, "Never", delay=0.1)
    portal.reset()
    time.sleep(0.2)
    messages = api.ok("imopenlines.session.history.get", {"SESSION_ID": 343})["message"]
    assert str(message_id) not in messages


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"session_id": 999999, "author_id": 103, "text": "x"}, 404),
        ({"session_id": 343, "author_id": 5555, "text": "x"}, 404),
    ],
)
def test_messages_endpoint_refuses_unknown_sessions_and_authors(http, portal, payload, status):
    code, body = _control(http, portal, "POST", "messages", payload)
    assert code == status
    assert "does not exist" in body["error"]


def test_sessions_endpoint_opens_a_session_and_closes_the_previous_one(http, api, portal):
    status, body = _control(http, portal, "POST", "sessions", {"chat_id": SEED.sales_chat_id})
    assert status == 200
    new_id = body["session_id"]
    assert api.ok("imopenlines.session.history.get", {"CHAT_ID": SEED.sales_chat_id})["sessionId"] == new_id
    active = api.ok("imopenlines.crm.chat.get", {"CRM_ENTITY_TYPE": "lead", "CRM_ENTITY": 1209})
    assert [c["CHAT_ID"] for c in active] == [str(SEED.sales_chat_id)]
    assert portal.open_session(SEED.sales_chat_id) == new_id + 1
    assert _control(http, portal, "POST", "sessions", {"chat_id": SEED.group_chat_id})[0] == 400
    assert _control(http, portal, "POST", "sessions", {"chat_id": 424242})[0] == 404


def test_close_session_endpoint(http, portal):
    assert _control(http, portal, "POST", "sessions/close", {"session_id": SEED.sales_session_id}) == (
        200,
        {"ok": True},
    )
    assert portal.engine.state.sessions[SEED.sales_session_id].closed is True
    assert _control(http, portal, "POST", "sessions/close", {"session_id": 424242})[0] == 404


def test_config_endpoint_changes_the_live_config(http, api, portal):
    status, body = _control(
        http, portal, "POST", "config", {"rate_limit_enabled": True, "burst": 0, "per_second": 0.01}
    )
    assert (status, body) == (200, {"ok": True})
    assert portal.config.burst == 0
    assert [api.post("server.time").status_code for _ in range(2)] == [200, 503]
    assert _control(http, portal, "POST", "config", {"no_such_field": 1})[0] == 400
    assert _control(http, portal, "POST", "config", {"rate_limit_enabled": "yes"})[0] == 400


def test_reset_restores_seed_config_and_counters(http, api, portal):
    portal.configure(overloaded=True)
    api.post("profile")
    portal.add_message(343, 103, "extra")
    status, _ = _control(http, portal, "POST", "reset")
    assert status == 200
    assert portal.config.overloaded is False
    assert portal.stats()["requests"] == 0
    assert len(api.ok("imopenlines.session.history.get", {"SESSION_ID": 343})["message"]) == 4


def test_reset_can_keep_the_config(http, portal):
    portal.configure(list_page_size=7)
    assert _control(http, portal, "POST", "reset", {"keep_config": True})[0] == 200
    assert portal.config.list_page_size == 7
    portal.reset()
    assert portal.config.list_page_size == 50


def test_stats_counts_requests_statuses_errors_and_batch_commands(http, api, portal):
    api.ok("profile")
    api.post("imopenlines.session.history.get")
    api.ok("batch", {"cmd": ["profile", "scope"]})
    status, stats = _control(http, portal, "GET", "stats")
    assert status == 200
    assert stats["requests"] == 3
    assert stats["by_method"] == {"profile": 1, "imopenlines.session.history.get": 1, "batch": 1}
    assert stats["by_status"] == {"200": 2, "400": 1}
    assert stats["errors"] == {"MISSING_REQUIRED_PARAM": 1}
    assert stats["batch_commands"] == 2
    assert [entry[1:] for entry in stats["log"]] == [
        ["profile", 200],
        ["imopenlines.session.history.get", 400],
        ["batch", 200],
    ]
    assert all(isinstance(entry[0], float) for entry in stats["log"])


def test_seed_and_health_endpoints(http, portal):
    assert _control(http, portal, "GET", "health") == (200, {"ok": True})
    status, seed = _control(http, portal, "GET", "seed")
    assert status == 200
    assert seed["support_chat_id"] == SEED.support_chat_id
    assert seed["bulk_message_ids"] == {"start": 100001, "stop": 100001 + 300}


def test_unknown_control_endpoint_and_bad_json(http, portal):
    assert _control(http, portal, "GET", "nothing-here")[0] == 404
    response = http.post(
        f"{portal.base_url}/_sandbox/config", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_connection_json_kinds(portal):
    webhook = json.loads(portal.airflow_conn_json("webhook"))
    assert webhook == {"conn_type": "bitrix24", "host": portal.webhook_url, "login": "", "password": "", "extra": {}}
    split = json.loads(portal.airflow_conn_json("split"))
    assert (split["host"], split["login"], split["password"]) == (portal.base_url, "1", portal.webhook_code)
    limited = json.loads(portal.airflow_conn_json("limited"))
    assert limited["host"] == portal.limited_webhook_url
    portal.configure(rate_limit_enabled=True)
    assert json.loads(portal.airflow_conn_json())["extra"] == {"rate_limit": {"burst": 50, "per_second": 2.0}}
    with pytest.raises(ValueError, match="unknown connection kind"):
        portal.airflow_conn_json("ftp")


def test_addresses_and_credentials(portal):
    assert portal.base_url.startswith("http://127.0.0.1:")
    assert portal.webhook_url == f"{portal.base_url}/rest/1/sandbox-webhook-0000/"
    assert portal.limited_webhook_url == f"{portal.base_url}/rest/2/sandbox-limited-0000/"
    assert (portal.webhook_user_id, portal.webhook_code) == (1, "sandbox-webhook-0000")
    assert portal.oauth_url == portal.base_url + "/oauth/token/"
    assert (portal.oauth_client_id, portal.oauth_client_secret) == ("app.sandbox.0000", "sandbox-client-secret-0000")


def test_presets_set_the_bucket():
    assert (SandboxConfig.preset("standard").burst, SandboxConfig.preset("standard").per_second) == (50, 2.0)
    enterprise = SandboxConfig.preset("enterprise", operating_limit=10.0)
    assert (enterprise.burst, enterprise.per_second, enterprise.operating_limit) == (250, 5.0, 10.0)
    assert SandboxConfig.preset("unlimited").rate_limit_enabled is False
    with pytest.raises(ValueError, match="unknown preset"):
        SandboxConfig.preset("gold")


def test_seed_follows_bulk_and_pool_size():
    with SandboxPortal(SandboxConfig(bulk_messages=10, extra_sessions=500)) as portal:
        seed = portal.seed
        assert seed.bulk_message_ids == range(100001, 100011)
        assert seed.extra_session_ids == range(10001, 10501)
        assert seed.extra_chat_ids == range(20001, 20501)
        state = portal.engine.state
        texts = {state.messages[m].text for m in seed.bulk_message_ids}
        assert len(texts) == 10
        last_pool_message = max(state.sessions[seed.extra_session_ids[-1]].message_ids)
        assert last_pool_message > max(seed.bulk_message_ids)
    assert SEED.bulk_message_ids == range(100001, 103001)
