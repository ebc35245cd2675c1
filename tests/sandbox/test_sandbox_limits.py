"""The per-IP leaky bucket and the per-method operating limit."""

from __future__ import annotations

import math
import time

import pytest

LIMIT_BODY = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
BLOCKED_BODY = {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."}


def _statuses(api, count, method="server.time"):
    return [api.post(method).status_code for _ in range(count)]


def test_bucket_refuses_requests_above_the_burst_and_drains(api, portal):
    portal.configure(rate_limit_enabled=True, burst=3, per_second=0.5)
    # Counter before each request: 0, 1, 2, 3 (not above 3) -> allowed; then 4 > 3 -> refused.
    assert _statuses(api, 6) == [200, 200, 200, 200, 503, 503]
    assert api.error("profile") == (503, LIMIT_BODY)
    portal.configure(per_second=40.0)
    time.sleep(0.1)
    assert api.post("server.time").status_code == 200
    stats = portal.stats()
    assert stats["by_status"] == {"200": 5, "503": 3}
    assert stats["errors"] == {"QUERY_LIMIT_EXCEEDED": 3}


def test_bucket_status_can_be_429(api, portal):
    portal.configure(rate_limit_enabled=True, burst=0, per_second=0.01, limit_status=429)
    assert _statuses(api, 2) == [200, 429]
    assert api.error("profile") == (429, LIMIT_BODY)


def test_refused_requests_fill_the_bucket_only_when_configured(api, portal):
    portal.configure(rate_limit_enabled=True, burst=1, per_second=0.1)
    assert _statuses(api, 12) == [200, 200] + [503] * 10
    portal.configure(per_second=2.0)
    time.sleep(0.6)  # drains at least 1.2: the counter (2) is back under the burst
    assert api.post("server.time").status_code == 200

    portal.reset()
    portal.configure(rate_limit_enabled=True, burst=1, per_second=0.1, count_rejected=True)
    assert _statuses(api, 12) == [200, 200] + [503] * 10
    portal.configure(per_second=2.0)
    # Drains 1.2 of 12: still above the burst, and it stays so unless 5.5 s pass between the last two requests.
    time.sleep(0.6)
    assert api.post("server.time").status_code == 503


def test_batch_counts_once_on_the_bucket(api, portal):
    portal.configure(rate_limit_enabled=True, burst=1, per_second=0.01)
    batch = api.ok("batch", {"cmd": [f"server.time?n={i}" for i in range(30)]})
    assert len(batch["result"]) == 30
    assert api.post("profile").status_code == 200
    assert api.post("profile").status_code == 503


def test_control_endpoints_are_not_rate_limited(http, api, portal):
    portal.configure(rate_limit_enabled=True, burst=0, per_second=0.01)
    assert _statuses(api, 2) == [200, 503]
    for _ in range(5):
        assert http.get(portal.base_url + "/_sandbox/stats").status_code == 200
    assert portal.stats()["requests"] == 2


def test_operating_limit_blocks_after_the_crossing_call_and_unblocks_when_buckets_expire(api, portal):
    portal.configure(operating_limit=1.0, operating_cost={"profile": 0.6}, operating_bucket=0.5, operating_window=1.5)
    started = time.time()
    first = api.post("profile").json()["time"]
    answered = time.time()
    assert first["operating"] == pytest.approx(0.6)
    # The window's end (its bucket opened during the call), rounded up to a whole second.
    assert started + 1.5 <= first["operating_reset_at"] <= math.ceil(answered + 1.5)
    second = api.post("profile").json()["time"]  # 0.6 <= 1.0 before the call: it runs and crosses the limit
    assert second["operating"] == pytest.approx(1.2)
    assert api.error("profile") == (429, BLOCKED_BODY)
    # Other methods and other webhooks keep working.
    assert api.ok("scope")
    assert api.ok("profile", base=portal.limited_webhook_url)["ID"] == "2"
    time.sleep(1.55)
    assert api.ok("profile")["ID"] == "1"
    assert portal.stats()["errors"] == {"OPERATION_TIME_LIMIT": 1}


def test_operating_counts_real_execution_time_without_cost(api, portal):
    first = api.post("imopenlines.session.history.get", {"SESSION_ID": 321}).json()["time"]
    second = api.post("imopenlines.session.history.get", {"SESSION_ID": 321}).json()["time"]
    assert 0 < first["operating"] < second["operating"] < 1
    assert first["operating_reset_at"] == second["operating_reset_at"]


def test_operating_fields_are_absent_when_the_limiter_is_off(api, portal):
    portal.configure(operating_enabled=False, operating_limit=0.0)
    for _ in range(3):
        timing = api.post("profile").json()["time"]
        assert "operating" not in timing
        assert "operating_reset_at" not in timing


def test_older_portals_meter_each_command_under_its_own_method_and_not_batch(api, portal):
    portal.configure(batch_billing="command", operating_limit=1.0, operating_cost={"profile": 0.6, "batch": 100.0})
    before = time.time()
    result, outer = _batch(api, {"a": "profile", "b": "profile", "c": "profile", "d": "scope"})
    assert list(result["result"]) == ["a", "b", "d"]
    assert result["result_error"] == {"c": BLOCKED_BODY}
    assert result["result_time"]["b"]["operating"] == pytest.approx(1.2)
    # The blocked command has no timing of its own, as on real portals.
    assert list(result["result_time"]) == ["a", "b", "d"]
    assert before + 600 <= result["result_time"]["b"]["operating_reset_at"] <= time.time() + 601
    # The outer block reports the counter of the last command's method.
    assert outer["operating"] == result["result_time"]["d"]["operating"]
    assert outer["operating_reset_at"] == result["result_time"]["d"]["operating_reset_at"]
    # batch itself is not metered (its cost of 100 s would have blocked it).
    again, _ = _batch(api, {"d": "scope"})
    assert again["result"]["d"] == ["imopenlines", "im", "imbot", "user", "crm"]
    assert api.error("profile") == (429, BLOCKED_BODY)


def test_batch_is_metered_as_batch_by_default(api, portal):
    assert portal.config.batch_billing == "batch"
    portal.configure(operating_limit=1.0, operating_cost={"profile": 0.6})
    result, outer = _batch(api, {"a": "profile", "b": "profile"})
    assert list(result["result"]) == ["a", "b"]
    # Commands carry the running total of the batch; the outer block the batch's counter.
    assert result["result_time"]["a"]["operating"] == pytest.approx(0.6)
    assert result["result_time"]["b"]["operating"] == pytest.approx(1.2)
    assert outer["operating"] == pytest.approx(1.2)
    assert isinstance(outer["operating_reset_at"], int)
    # The commands' own method was not charged: a direct call sees only its own cost.
    assert api.post("profile").json()["time"]["operating"] == pytest.approx(0.6)
    # batch crossed the limit: the next batch is refused as a whole, with no time block.
    response = api.post("batch", {"cmd": {"s": "scope"}})
    assert (response.status_code, response.json()) == (429, BLOCKED_BODY)
    assert portal.stats()["errors"] == {"OPERATION_TIME_LIMIT": 1}


def test_batch_cost_can_be_set_for_the_whole_batch(api, portal):
    portal.configure(operating_limit=1.0, operating_cost={"batch": 2.0})
    _, outer = _batch(api, {"s": "scope"})
    assert outer["operating"] == pytest.approx(2.0)
    assert api.post("batch", {"cmd": {"s": "scope"}}).status_code == 429


@pytest.mark.parametrize("billing", ["batch", "command"])
def test_command_of_a_blocked_method_is_refused_inside_a_batch_without_a_time_of_its_own(api, portal, billing):
    portal.configure(batch_billing=billing, operating_limit=1.0, operating_cost={"profile": 0.6})
    for _ in range(2):
        api.ok("profile")
    assert api.error("profile") == (429, BLOCKED_BODY)
    result, outer = _batch(api, {"me": "profile", "s": "scope"})
    assert result["result_error"] == {"me": BLOCKED_BODY}
    assert list(result["result"]) == ["s"]
    assert list(result["result_time"]) == ["s"]
    assert isinstance(outer["operating_reset_at"], int)
    assert portal.stats()["batch_errors"] == {"OPERATION_TIME_LIMIT": 1}


def test_batch_of_one_blocked_command_answers_as_real_portals(api, portal):
    """As logged from a real portal (b24phpsdk, 2023): every section but ``result_error`` is ``[]``."""
    portal.configure(batch_billing="command", operating_limit=1.0, operating_cost={"profile": 2.0})
    api.ok("profile")
    result, outer = _batch(api, {"592dcd1e": "profile"})
    assert result == {
        "result": [],
        "result_error": {"592dcd1e": BLOCKED_BODY},
        "result_total": [],
        "result_next": [],
        "result_time": [],
    }
    assert {"operating", "operating_reset_at"} <= set(outer)


def test_batch_billing_takes_only_known_names(portal):
    with pytest.raises(ValueError, match="batch_billing must be one of"):
        portal.configure(batch_billing="per-command")


def _batch(api, cmd):
    response = api.post("batch", {"cmd": cmd})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["result"], body["time"]
