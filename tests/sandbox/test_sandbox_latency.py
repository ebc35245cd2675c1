"""The latency model: round trip, per-request overhead and per-method processing, reported in the time block."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time

import pytest
import requests

from airflow_provider_bitrix24.sandbox import SEED, SandboxConfig, SandboxPortal
from airflow_provider_bitrix24.sandbox.latency import PRESETS, LatencyModel, model_of

HISTORY = "imopenlines.session.history.get"
SAVE = "imopenlines.message.quick.save"
#: Upper-bound slack for sleeps on a loaded machine: assertions only say "not much longer than modelled".
SLACK = 2.0


def _timed(call):
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def test_latency_is_off_by_default(portal):
    assert portal.config.latency == "off"
    assert portal.engine.latency == LatencyModel(processing={})
    assert PRESETS["off"].processing_of(SAVE) == 0.0


def test_reported_time_agrees_with_the_modelled_time(api, portal):
    portal.configure(network_round_trip=0.1, request_overhead=0.1, processing_time={HISTORY: 0.2})
    response, wall = _timed(lambda: api.post(HISTORY, {"SESSION_ID": SEED.sales_session_id}))
    timing = response.json()["time"]
    assert 0.2 <= timing["processing"] < 0.2 + SLACK
    assert timing["duration"] == pytest.approx(timing["finish"] - timing["start"])
    assert timing["duration"] - timing["processing"] >= 0.1  # the overhead is outside processing
    # The operating counter is charged with the same processing time.
    assert timing["operating"] == pytest.approx(timing["processing"])
    # The client waited the round trip on top of the portal's duration.
    assert wall >= 0.1 + timing["duration"] - 0.01
    # Methods without a figure take none.
    fast = api.post("server.time").json()["time"]
    assert fast["processing"] < 0.1


def test_batch_processes_its_commands_one_after_another(api, portal):
    portal.configure(processing_time={SAVE: 0.1})
    cmd = [f"{SAVE}?CHAT_ID={SEED.bulk_chat_id}&MESSAGE_ID={m}" for m in SEED.bulk_message_ids[:5]]
    body = api.post("batch", {"cmd": cmd}).json()
    times = body["result"]["result_time"]
    assert body["result"]["result"] == [True] * 5
    assert all(t["processing"] >= 0.1 for t in times)
    for earlier, later in itertools.pairwise(times):
        assert later["start"] >= earlier["finish"]
    outer = body["time"]
    assert outer["processing"] >= sum(t["duration"] for t in times) >= 0.5
    # Billed as a batch: its counter grew by exactly the commands' processing.
    assert outer["operating"] == pytest.approx(sum(t["processing"] for t in times))
    assert outer["processing"] < 0.5 + SLACK


def test_concurrent_requests_are_processed_in_parallel(portal):
    portal.configure(processing_time={"profile": 1.0})
    count = 6
    barrier = threading.Barrier(count)
    walls: list[float] = []

    def call() -> None:
        with requests.Session() as http:
            http.trust_env = False
            barrier.wait()
            response, wall = _timed(lambda: http.post(portal.webhook_url + "profile", timeout=30))
            assert response.status_code == 200
            walls.append(wall)

    started = time.perf_counter()
    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    elapsed = time.perf_counter() - started
    assert len(walls) == count
    assert min(walls) >= 1.0
    # One after another would take 6 s (two at a time 3 s); all at once takes 1 s plus the machine's delays.
    assert elapsed < count * 1.0 / 2


def test_a_slow_call_holds_no_lock_of_the_portal(http):
    # A portal of its own: stopping it cuts the slow call's 30 s short, so the test need not wait for it.
    portal = SandboxPortal(SandboxConfig(processing_time={HISTORY: 30.0}, bulk_messages=0)).start()
    webhook = portal.webhook_url

    def history() -> None:
        with requests.Session() as other:
            other.trust_env = False
            with contextlib.suppress(requests.RequestException):  # the portal stops under it
                other.post(webhook + HISTORY, json={"SESSION_ID": SEED.sales_session_id}, timeout=60)

    slow = threading.Thread(target=history)
    slow.start()
    try:
        time.sleep(0.5)  # the history call is now in its processing
        body = {"CHAT_ID": SEED.support_chat_id, "MESSAGE_ID": 85805}
        response, wall = _timed(lambda: http.post(webhook + SAVE, json=body, timeout=60))
        assert response.status_code == 200
        assert wall < 3.0  # behind a lock it would wait about 29.5 s, for the history call to end
        response, wall = _timed(lambda: http.get(portal.base_url + "/_sandbox/quick-answers", timeout=60))
        assert response.status_code == 200
        assert wall < 3.0
        assert slow.is_alive()
    finally:
        portal.stop()
        slow.join(10)


def test_realistic_preset_holds_the_documented_figures():
    model = model_of(SandboxConfig(latency="realistic"))
    assert (model.round_trip, model.overhead) == (0.050, 0.052)
    assert model.processing_of(SAVE) == 0.031
    assert model.overhead + model.processing_of(SAVE) == pytest.approx(0.083)  # quick.save example duration
    assert model.processing_of(HISTORY) == 0.068
    assert model.overhead + model.processing_of("imopenlines.dialog.get") == pytest.approx(0.423)
    assert model.overhead + model.processing_of("imopenlines.crm.chat.get") == pytest.approx(0.592)
    assert model.overhead + model.processing_of("imopenlines.session.open") == pytest.approx(0.280)
    assert model.processing_of("profile") == 0.0045


def test_realistic_preset_over_http_answers_as_slowly_as_documented(http, api, portal):
    response = http.post(portal.base_url + "/_sandbox/config", json={"latency": "realistic"})
    assert response.json() == {"ok": True}
    response, wall = _timed(lambda: api.post(SAVE, {"CHAT_ID": SEED.support_chat_id, "MESSAGE_ID": 85805}))
    timing = response.json()["time"]
    assert timing["processing"] >= 0.031
    assert timing["duration"] >= 0.083
    assert wall >= 0.133 - 0.01
    assert timing["duration"] < 0.083 + SLACK


def test_explicit_figures_override_the_preset(portal):
    portal.configure(latency="realistic", network_round_trip=0, processing_time={"*": 0.01, "profile": 0.02})
    model = portal.engine.latency
    assert (model.round_trip, model.overhead) == (0.0, 0.052)
    assert (model.processing_of("profile"), model.processing_of("scope"), model.processing_of(SAVE)) == (
        0.02,
        0.01,
        0.031,
    )
    portal.configure(network_round_trip=None)
    assert portal.engine.latency.round_trip == 0.05


def test_the_token_endpoint_pays_the_round_trip(http, portal):
    portal.configure(network_round_trip=0.3)
    params = {
        "grant_type": "refresh_token",
        "client_id": portal.oauth_client_id,
        "client_secret": portal.oauth_client_secret,
        "refresh_token": portal.oauth_refresh_token,
    }
    response, wall = _timed(lambda: http.get(portal.oauth_url, params=params))
    assert response.status_code == 200
    assert wall >= 0.3


@pytest.mark.parametrize(
    "payload",
    [
        {"latency": "slow"},
        {"network_round_trip": -1},
        {"request_overhead": 61},
        {"request_overhead": "nan"},
        {"processing_time": {"profile": "soon"}},
        {"processing_time": [0.1]},
    ],
)
def test_latency_settings_are_checked(http, portal, payload):
    response = http.post(portal.base_url + "/_sandbox/config", json=payload)
    assert response.status_code == 400
    assert response.json()["error"]


def test_stopping_the_portal_cuts_a_long_pause_short():
    portal = SandboxPortal(SandboxConfig(processing_time={"profile": 30.0})).start()
    outcome: list[object] = []

    def call() -> None:
        with requests.Session() as http:
            http.trust_env = False
            try:
                outcome.append(http.post(portal.webhook_url + "profile", timeout=20).status_code)
            except requests.RequestException as exc:
                outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.3)
    started = time.perf_counter()
    portal.stop()
    thread.join(10)
    assert time.perf_counter() - started < 6
    assert not thread.is_alive()
    assert outcome
