"""Narrow unit tests of the transport-free core: envelope parsing, encoding, pacing and retry decisions."""

from __future__ import annotations

import json
import pickle
import random
import time

import pytest

from airflow_provider_bitrix24.client import limits
from airflow_provider_bitrix24.client.config import RateLimit
from airflow_provider_bitrix24.client.core import HttpResponse, parse_response, php_query
from airflow_provider_bitrix24.client.errors import (
    Bitrix24ApiError,
    Bitrix24MethodError,
    Bitrix24OperationTimeLimitError,
    Bitrix24RateLimitError,
    Bitrix24ResponseError,
    Bitrix24TransportError,
    error_from_payload,
)
from airflow_provider_bitrix24.client.limits import (
    LATENCY_ALLOWANCE,
    RATE_SAFETY,
    LeakyBucket,
    LocalLimiter,
    OperatingTracker,
    usable_burst,
)
from airflow_provider_bitrix24.client.retry import RetryPolicy


def _response(status: int, body: object, content_type: str = "application/json") -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(status, raw, {"content-type": content_type})


def test_envelope_keeps_result_time_next_and_total():
    env = parse_response(_response(200, {"result": [1], "next": 50, "total": 120, "time": {"operating": 1.5}}), "m")
    assert (env.result, env.next, env.total, env.time["operating"]) == ([1], 50, 120, 1.5)


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (502, b"<html><body>Bad Gateway</body></html>", "INVALID_RESPONSE", True),
        (503, b"", "EMPTY_RESPONSE", True),
        (200, b"", "EMPTY_RESPONSE", True),
        (200, b'{"result": [1, 2', "INVALID_RESPONSE", True),
        (200, b"[1, 2]", "INVALID_RESPONSE", False),
        (200, b'{"total": 3}', "INVALID_RESPONSE", False),
        (504, b'{"nothing": true}', "INVALID_RESPONSE", True),
    ],
)
def test_bodies_that_are_not_the_envelope_raise_a_clear_error(status, body, code, retryable):
    with pytest.raises(Bitrix24ResponseError) as info:
        parse_response(_response(status, body, "text/html"), "profile")
    err = info.value
    assert (err.code, err.status, err.retryable, err.method) == (code, status, retryable, "profile")
    assert str(err).startswith(code)
    assert f"HTTP {status}" in str(err)


def test_error_body_maps_by_code_not_status():
    with pytest.raises(Bitrix24RateLimitError) as info:
        parse_response(_response(429, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many"}), "batch")
    assert info.value.retryable
    assert str(info.value) == "QUERY_LIMIT_EXCEEDED: Too many (HTTP 429, method batch)"


def test_unknown_error_code_is_a_permanent_method_error():
    err = error_from_payload(
        "CANT_SAVE_QUICK_ANSWER", "Error saving", status=400, method="imopenlines.message.quick.save"
    )
    assert isinstance(err, Bitrix24MethodError)
    assert not err.retryable


def test_operation_time_limit_carries_the_known_reset():
    limiter = LocalLimiter(LeakyBucket(RateLimit(burst=5, per_second=2.0)), OperatingTracker())
    reset = int(time.time()) + 300
    limiter.observe("crm.deal.list", {"operating": 481.0, "operating_reset_at": reset})
    with pytest.raises(Bitrix24OperationTimeLimitError) as info:
        parse_response(
            _response(429, {"error": "OPERATION_TIME_LIMIT", "error_description": "x"}), "crm.deal.list", limiter
        )
    assert info.value.unblocks_at == reset
    assert limiter.blocked_until("crm.deal.list") == reset


def test_errors_survive_pickling_with_their_fields():
    err = error_from_payload("ACCESS_DENIED", "nope", status=403, method="x")
    clone = pickle.loads(pickle.dumps(err))
    assert (type(clone), clone.code, clone.status, clone.method, str(clone)) == (
        type(err),
        "ACCESS_DENIED",
        403,
        "x",
        str(err),
    )
    assert isinstance(clone, Bitrix24ApiError)


def test_php_query_encodes_nested_parameters():
    assert php_query({"CHAT_ID": 5, "FILTER": {">ID": 7}, "SELECT": ["ID", "NAME"], "FLAG": True}) == (
        "CHAT_ID=5&FILTER%5B%3EID%5D=7&SELECT%5B0%5D=ID&SELECT%5B1%5D=NAME&FLAG=Y"
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_paces_at_the_drain_rate():
    clock = FakeClock()
    bucket = LeakyBucket(RateLimit(burst=5, per_second=2.0), clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5
    waits = [bucket.reserve() for _ in range(3)]
    rate = 2.0 * RATE_SAFETY
    assert waits == pytest.approx([1 / rate, 2 / rate, 3 / rate])
    clock.now += 10
    assert bucket.reserve() == 0.0


@pytest.mark.parametrize(
    ("burst", "per_second", "usable"),
    [(50, 2.0, 50), (250, 5.0, 248), (10, 20.0, 5), (10, 10.0, 6), (2, 2.0, 2), (1, 20.0, 1), (50, 0.5, 50)],
)
def test_the_client_keeps_a_reserve_of_the_portals_bucket_for_late_requests(burst, per_second, usable):
    """per_second x LATENCY_ALLOWANCE units, less the one the portal lets past, stay free (at most half)."""
    assert usable_burst(RateLimit(burst=burst, per_second=per_second)) == usable


def _portal_refusals(limit: RateLimit, requests: list[tuple[float, float]]) -> int:
    """
    Each request books its slot on the client's bucket when it is ready and goes out when the slot comes, then
    reaches the portal ``late`` seconds after that. Count what the portal's bucket (the sandbox's model) refuses.
    """
    from airflow_provider_bitrix24.sandbox.config import SandboxConfig
    from airflow_provider_bitrix24.sandbox.limits import LeakyBucket as PortalBucket

    clock = FakeClock()
    client = LeakyBucket(limit, clock=clock)
    arrivals = []
    for ready, late in sorted(requests):
        clock.now = 1010.0 + ready  # after the bucket was made: it never sees time go back
        arrivals.append(clock.now + client.reserve() + late)
    portal_clock = FakeClock()
    config = SandboxConfig(rate_limit_enabled=True, burst=limit.burst, per_second=limit.per_second)
    portal = PortalBucket(config, clock=portal_clock)
    refused = 0
    for at in sorted(arrivals):
        portal_clock.now = at
        refused += not portal.admit("client")
    return refused


def _bunched(limit: RateLimit, late: float) -> list[tuple[float, float]]:
    """
    The worst bunching: requests trickle out for ``late`` seconds and all reach the portal late, at the moment
    the next burst goes out on time, so the portal counts them together.
    """
    step = 1 / limit.per_second
    trickle = [(-late + k * step, late - k * step) for k in range(round(late * limit.per_second))]
    return trickle + [(0.0, 0.0)] * (limit.burst * 2)


@pytest.mark.parametrize("limit", [RateLimit(50, 2.0), RateLimit(250, 5.0), RateLimit(10, 20.0), RateLimit(50, 10.0)])
def test_requests_reaching_the_portal_late_do_not_overflow_its_bucket(limit, monkeypatch):
    """Up to LATENCY_ALLOWANCE late (less when the reserve is capped at half the bucket): nothing is refused."""
    reserve = limit.burst - usable_burst(limit)
    late = min(LATENCY_ALLOWANCE, (reserve + 1) / limit.per_second)  # the portal lets one more past its burst
    assert _portal_refusals(limit, _bunched(limit, late)) == 0
    rng = random.Random(7)
    for _ in range(20):
        requests = [(rng.uniform(0, 10), rng.uniform(0, late)) for _ in range(limit.burst * 3)]
        assert _portal_refusals(limit, requests) == 0
    if reserve:
        monkeypatch.setattr(limits, "usable_burst", lambda lim: lim.burst)
        assert _portal_refusals(limit, _bunched(limit, late)) > 0


def test_bucket_assumes_full_after_a_rejection():
    clock = FakeClock()
    bucket = LeakyBucket(RateLimit(burst=5, per_second=2.0), clock=clock)
    bucket.note_rejected()
    assert bucket.reserve() > 0


def test_retry_policy_backs_off_exponentially_within_caps():
    policy = RetryPolicy(max_retries=4, base_delay=1.0, max_delay=3.0, max_total_wait=100, jitter=0.0)
    err = Bitrix24TransportError("TIMEOUT", "x")
    assert [policy.delay(err, attempt, 0) for attempt in range(5)] == [1.0, 2.0, 3.0, 3.0, None]


def test_retry_policy_never_retries_permanent_errors_and_bounds_total_wait():
    policy = RetryPolicy(max_retries=10, base_delay=1.0, jitter=0.0, max_total_wait=5.0)
    assert policy.delay(error_from_payload("ACCESS_DENIED", "", status=403, method="m"), 0, 0) is None
    assert policy.delay(Bitrix24TransportError("TIMEOUT", ""), 0, 4.5) is None


def test_retry_policy_waits_for_the_operating_reset_when_it_fits():
    policy = RetryPolicy(max_total_wait=60, clock=lambda: 1000.0)
    err = error_from_payload("OPERATION_TIME_LIMIT", "", status=429, method="m", unblocks_at=1030.0)
    assert policy.delay(err, 0, 0) == pytest.approx(31.0)
    err_far = error_from_payload("OPERATION_TIME_LIMIT", "", status=429, method="m", unblocks_at=1500.0)
    assert policy.delay(err_far, 0, 0) is None


def test_retry_after_a_timeout_waits_for_the_portal_cutoff():
    """The portal may still be executing a timed-out request; its retry must not overlap it."""
    policy = RetryPolicy(base_delay=0.5, jitter=0.0, server_cutoff=60.0, max_total_wait=120)
    timeout = Bitrix24TransportError("TIMEOUT", "no answer")
    assert policy.delay(timeout, 0, 0, sent_ago=75.0) == 0.5  # the default timeout is past the cut-off
    assert policy.delay(timeout, 0, 0, sent_ago=5.0) == pytest.approx(55.0)
    refused = Bitrix24TransportError("CONNECTION_FAILED", "refused")
    assert policy.delay(refused, 0, 0, sent_ago=0.01) == 0.5


def _drive_to_send(flow, value=None):
    """Advance a flow past the limiter's grant to its next Send."""
    from airflow_provider_bitrix24.client.core import Acquire, Send
    from airflow_provider_bitrix24.client.limits import Grant

    action = flow.send(value) if value is not None else next(flow)
    while not isinstance(action, Send):
        assert isinstance(action, Acquire), action
        action = flow.send(Grant(0.0))
    return action


def test_renamed_portal_redirect_is_followed_with_the_same_post():
    """A renamed cloud portal answers 302 with its new address; the call is re-sent there, as a POST."""
    from airflow_provider_bitrix24.client.config import parse_connection
    from airflow_provider_bitrix24.client.core import Engine

    engine = Engine(parse_connection(host="https://old.bitrix24.com/rest/1/fake-code-0000/"))
    flow = engine.call_flow("profile", {"A": 1})
    first = _drive_to_send(flow)
    assert first.request.url == "https://old.bitrix24.com/rest/1/fake-code-0000/profile"
    moved = HttpResponse(302, b"", {"location": "https://new.bitrix24.com/rest/1/fake-code-0000/profile"})
    second = _drive_to_send(flow, moved)
    assert second.request.method == "POST"
    assert second.request.url == "https://new.bitrix24.com/rest/1/fake-code-0000/profile"
    assert second.request.json == {"A": 1}
    with pytest.raises(StopIteration) as done:
        flow.send(_response(200, {"result": {"ID": "1"}}))
    assert done.value.value.result == {"ID": "1"}


@pytest.mark.parametrize(
    ("base", "location", "target"),
    [
        # Allowed: the same host over https (an upgrade included), or one cloud portal to another over https.
        ("https://old.bitrix24.com", "https://new.bitrix24.de/rest/x", "https://new.bitrix24.de"),
        ("http://127.0.0.1:8080", "https://127.0.0.1/rest/x", "https://127.0.0.1"),
        ("https://crm.example.com", "https://CRM.example.com/rest/x", None),  # same origin: nothing to follow
        # Refused: another host, plain http, an on-premise portal leaving its host, look-alike domains.
        ("https://old.bitrix24.com", "https://any.host/rest/1/code/profile", None),
        ("https://old.bitrix24.com", "http://new.bitrix24.com/rest/x", None),
        ("https://crm.example.com", "https://portal.bitrix24.com/rest/x", None),
        ("https://old.bitrix24.com", "https://bitrix24.com.evil.io/rest/x", None),
        ("https://old.bitrix24.com", "https://evilbitrix24.com/rest/x", None),
        ("http://127.0.0.1:8080", "http://127.0.0.1:9090/rest/x", None),
        ("http://127.0.0.1:8080", "http://x.localhost:8080/rest/x", None),
        ("https://old.bitrix24.com", "javascript:alert(1)", None),
    ],
)
def test_redirect_targets_that_may_receive_the_credential(base, location, target):
    from airflow_provider_bitrix24.client.core import redirect_target

    assert redirect_target(base, location) == target


def test_redirect_elsewhere_fails_clearly_without_showing_the_location_path():
    from airflow_provider_bitrix24.client.config import parse_connection
    from airflow_provider_bitrix24.client.core import Engine
    from airflow_provider_bitrix24.client.errors import Bitrix24PortalMovedError

    engine = Engine(parse_connection(host="https://old.bitrix24.com/rest/1/fake-code-0000/"))
    flow = engine.call_flow("profile")
    _drive_to_send(flow)
    with pytest.raises(Bitrix24PortalMovedError) as info:
        flow.send(HttpResponse(302, b"", {"location": "http://evil.example.com/rest/1/fake-code-0000/profile"}))
    text = str(info.value)
    assert text.startswith("PORTAL_MOVED: the portal answered HTTP 302 moving to http://evil.example.com;")
    assert "update the connection's host" in text
    assert "fake-code-0000" not in text
    assert not info.value.retryable
