"""Fault injection, and stopping a portal that still has requests hanging."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from airflow_provider_bitrix24.sandbox import SEED, SandboxConfig, SandboxPortal

SAVE = "imopenlines.message.quick.save"
SAVE_PARAMS = {"CHAT_ID": SEED.support_chat_id, "MESSAGE_ID": SEED.new_text_message_id}


def _saved(portal) -> bool:
    return any(a["message_id"] == SEED.new_text_message_id for a in portal.quick_answers())


def test_error_fault_answers_without_running_the_method(api, portal):
    portal.inject_fault(SAVE, "error", error="INTERNAL_SERVER_ERROR")
    assert api.error(SAVE, SAVE_PARAMS) == (
        500,
        {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"},
    )
    assert not _saved(portal)
    assert api.ok(SAVE, SAVE_PARAMS) is True
    assert _saved(portal)


@pytest.mark.parametrize(
    ("error", "status", "description"),
    [
        ("QUERY_LIMIT_EXCEEDED", 503, "Too many requests"),
        ("OPERATION_TIME_LIMIT", 429, "Method is blocked due to operation time limit."),
        ("expired_token", 401, "The access token provided has expired"),
        ("ERROR_CORE", 400, "Internal error"),
        ("SOME_METHOD_ERROR", 400, "Injected fault"),
    ],
)
def test_error_fault_defaults_to_the_documented_status_and_text(api, portal, error, status, description):
    portal.inject_fault("profile", "error", error=error)
    assert api.error("profile") == (status, {"error": error, "error_description": description})
    assert portal.stats()["errors"] == {error: 1}


def test_error_fault_status_and_description_can_be_set(api, portal):
    portal.inject_fault("profile", "error", error="ERROR_CORE", status=502, description="upstream broke")
    assert api.error("profile") == (502, {"error": "ERROR_CORE", "error_description": "upstream broke"})


def test_faults_are_consumed_in_order_and_counted(api, portal):
    portal.inject_fault("*", "error", error="QUERY_LIMIT_EXCEEDED")
    portal.inject_fault("profile", "error", count=2, error="INTERNAL_SERVER_ERROR")
    statuses = [api.post("profile").status_code for _ in range(4)]
    assert statuses == [503, 500, 500, 200]
    assert api.ok("scope")
    assert portal.stats()["by_status"] == {"503": 1, "500": 2, "200": 2}


def test_wildcard_fault_matches_any_method_but_not_control_endpoints(http, api, portal):
    portal.inject_fault("*", "error", error="INTERNAL_SERVER_ERROR")
    assert http.get(portal.base_url + "/_sandbox/stats").status_code == 200
    assert api.error("server.time")[0] == 500
    assert api.ok("server.time")


def test_hang_fault_sends_nothing_until_its_delay(http, portal):
    portal.inject_fault("profile", "hang", delay=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(portal.webhook_url + "profile", timeout=0.3)
    assert http.post(portal.webhook_url + "profile", timeout=5).status_code == 200
    assert portal.stats()["by_status"] == {"0": 1, "200": 1}


def test_slow_fault_runs_the_method_then_waits(api, portal):
    portal.inject_fault(SAVE, "slow", delay=0.3)
    started = time.monotonic()
    assert api.ok(SAVE, SAVE_PARAMS) is True
    assert time.monotonic() - started >= 0.3
    assert _saved(portal)


def test_drop_after_fault_runs_the_method_and_closes_the_socket(http, portal):
    portal.inject_fault(SAVE, "drop_after")
    with pytest.raises(requests.exceptions.ConnectionError):
        http.post(portal.webhook_url + SAVE, json=SAVE_PARAMS, timeout=5)
    assert _saved(portal)
    assert portal.stats()["by_status"] == {"0": 1}


def test_drop_before_fault_closes_the_socket_without_running_the_method(http, portal):
    portal.inject_fault(SAVE, "drop_before")
    with pytest.raises(requests.exceptions.ConnectionError):
        http.post(portal.webhook_url + SAVE, json=SAVE_PARAMS, timeout=5)
    assert not _saved(portal)
    assert http.post(portal.webhook_url + SAVE, json=SAVE_PARAMS, timeout=5).json()["result"] is True


def test_raw_fault_sends_the_literal_body(api, portal):
    portal.inject_fault("profile", "raw", status=502, body="<html><h1>502 Bad Gateway</h1></html>")
    response = api.post("profile")
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html"
    assert response.text == "<html><h1>502 Bad Gateway</h1></html>"


def test_raw_fault_streams_a_large_body_of_the_given_size(http, portal):
    portal.inject_fault(
        "profile", "raw", status=200, size=20_000_000, body='{"result":', content_type="application/json"
    )
    with http.post(portal.webhook_url + "profile", stream=True, timeout=10) as response:
        assert int(response.headers["Content-Length"]) == 20_000_000
        received = sum(len(chunk) for chunk in response.iter_content(1 << 20))
    assert received == 20_000_000


def test_in_batch_fault_hits_matching_commands_only(api, portal):
    portal.inject_fault(SAVE, "error", in_batch=True, error="OPERATION_TIME_LIMIT")
    cmd = [
        f"{SAVE}?CHAT_ID={SEED.bulk_chat_id}&MESSAGE_ID={SEED.bulk_message_ids[0]}",
        f"{SAVE}?CHAT_ID={SEED.bulk_chat_id}&MESSAGE_ID={SEED.bulk_message_ids[1]}",
    ]
    result = api.ok("batch", {"cmd": cmd})
    # Command 0 failed, so the error section is keyed 0..n-1 (a JSON array) and the result section is not.
    assert result["result_error"] == [
        {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."}
    ]
    assert result["result"] == {"1": True}
    assert portal.stats()["batch_errors"] == {"OPERATION_TIME_LIMIT": 1}


def test_top_level_faults_do_not_reach_batch_commands(api, portal):
    portal.inject_fault("profile", "error", error="INTERNAL_SERVER_ERROR")
    assert api.ok("batch", {"cmd": {"me": "profile"}})["result"]["me"]["ID"] == "1"
    assert api.error("profile")[0] == 500


def test_faults_can_be_injected_over_http(http, api, portal):
    url = portal.base_url + "/_sandbox/faults"
    response = http.post(url, json={"method": "Profile", "kind": "error", "error": "PORTAL_DELETED", "count": 2})
    assert response.json() == {"ok": True}
    assert [api.post("profile").status_code for _ in range(3)] == [410, 410, 200]
    bad = http.post(url, json={"method": "profile", "kind": "explode"})
    assert bad.status_code == 400
    assert "explode" in bad.json()["error"]


@pytest.mark.parametrize(
    ("kind", "options"),
    [("explode", {}), ("hang", {"in_batch": True}), ("error", {"colour": "red"}), ("error", {"count": 0})],
)
def test_invalid_faults_are_refused(portal, kind, options):
    with pytest.raises(ValueError, match=r"."):
        portal.inject_fault("profile", kind, **options)


def test_reset_clears_pending_faults(api, portal):
    portal.inject_fault("profile", "error", count=5)
    portal.reset()
    assert api.ok("profile")["ID"] == "1"


def test_stop_returns_promptly_with_hanging_and_idle_connections():
    portal = SandboxPortal(SandboxConfig(bulk_messages=0)).start()
    portal.inject_fault("profile", "hang")  # would hang for an hour
    outcome: list[BaseException | int] = []

    def hanging_call() -> None:
        try:
            outcome.append(requests.post(portal.webhook_url + "profile", timeout=30).status_code)
        except requests.exceptions.RequestException as exc:
            outcome.append(exc)

    idle = requests.Session()
    assert idle.post(portal.webhook_url + "server.time", timeout=5).status_code == 200  # keep-alive socket stays open
    caller = threading.Thread(target=hanging_call)
    caller.start()
    deadline = time.monotonic() + 5
    while portal.stats()["by_status"].get("0") != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    portal.stop()
    assert time.monotonic() - started < 5  # the hang alone would last an hour
    caller.join(5)
    assert not caller.is_alive()
    assert isinstance(outcome[0], requests.exceptions.ConnectionError)
    portal.stop()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(portal.webhook_url + "server.time", timeout=2)
    idle.close()


def test_portal_works_as_a_context_manager():
    with SandboxPortal(SandboxConfig(bulk_messages=0)) as portal:
        assert requests.post(portal.webhook_url + "profile", timeout=5).json()["result"]["ID"] == "1"
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(portal.webhook_url + "profile", timeout=2)
