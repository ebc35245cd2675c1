"""The client's module boundaries: the wire format's batch split, the one transport boundary, the public asks."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import requests

from airflow_provider_bitrix24.client import AsyncBitrix24Client, Bitrix24Client, parse_connection
from airflow_provider_bitrix24.client.aio import HTTPX_ERRORS
from airflow_provider_bitrix24.client.config import RateLimit
from airflow_provider_bitrix24.client.errors import (
    Bitrix24OperationTimeLimitError,
    Bitrix24RateLimitError,
    Bitrix24RequestError,
    Bitrix24ServerError,
)
from airflow_provider_bitrix24.client.limits import LeakyBucket, LocalLimiter, OperatingTracker
from airflow_provider_bitrix24.client.retry import fills_bucket, is_overload, level_after_rejection
from airflow_provider_bitrix24.client.sync import REQUESTS_ERRORS
from airflow_provider_bitrix24.client.transport import map_failure
from airflow_provider_bitrix24.client.wire import BATCH_LIMIT, Envelope, decode_batch, encode_batch, split_batches

SECRET_URL = "https://portal.example/rest/1/s3cr3tcode/profile"


def _entries(n: int) -> list[tuple[str, tuple[str, dict[str, int]]]]:
    return [(str(i), ("imopenlines.message.quick.save", {"MESSAGE_ID": i})) for i in range(n)]


def test_a_run_is_split_into_requests_of_at_most_fifty_in_input_order():
    chunks = split_batches(_entries(120))
    assert [len(c) for c in chunks] == [50, 50, 20]
    assert [key for chunk in chunks for key, _ in chunk] == [str(i) for i in range(120)]
    assert [len(c) for c in split_batches(_entries(45), size=20)] == [20, 20, 5]
    assert [len(c) for c in split_batches(_entries(120), size=500)] == [BATCH_LIMIT, BATCH_LIMIT, 20]


def test_a_batch_answer_is_read_per_command_with_halt_marking_the_unsent():
    chunk = _entries(3)
    params = encode_batch(chunk, halt=True)
    assert params["halt"] == 1
    assert params["cmd"]["1"] == "imopenlines.message.quick.save?MESSAGE_ID=1"
    answer = Envelope(
        result={"result": {"0": True}, "result_error": {"1": {"error": "ACCESS_DENIED", "error_description": "no"}}},
        time={},
    )
    limiter = LocalLimiter(LeakyBucket(RateLimit(burst=50, per_second=2.0)), OperatingTracker())
    items, blocks = decode_batch(answer, chunk, halt=True, limiter=limiter)
    assert items["0"].result is True
    assert [item.error.code if item.error else None for item in items.values()] == [
        None,
        "ACCESS_DENIED",
        "NOT_EXECUTED",
    ]
    assert blocks == []


@pytest.mark.parametrize(
    ("requests_exc", "httpx_exc", "code"),
    [
        (requests.ConnectTimeout(SECRET_URL), httpx.ConnectTimeout(SECRET_URL), "TIMEOUT"),
        (requests.ReadTimeout(SECRET_URL), asyncio.TimeoutError(), "TIMEOUT"),
        (requests.ConnectionError(SECRET_URL), httpx.ConnectError(SECRET_URL), "CONNECTION_FAILED"),
        (
            requests.exceptions.ChunkedEncodingError(SECRET_URL),
            httpx.RemoteProtocolError(SECRET_URL),
            "CONNECTION_FAILED",
        ),
    ],
)
def test_both_http_libraries_failures_map_to_the_same_errors_without_the_url(requests_exc, httpx_exc, code):
    from_requests = map_failure(requests_exc, REQUESTS_ERRORS, method="profile", timeout=5.0)
    from_httpx = map_failure(httpx_exc, HTTPX_ERRORS, method="profile", timeout=5.0)
    for err in (from_requests, from_httpx):
        assert err.code == code
        assert err.retryable
        assert "s3cr3t" not in str(err)
        assert str(err).startswith(f"{code}: " if code == "TIMEOUT" else f"{code}")
    if code == "TIMEOUT":
        assert str(from_requests) == str(from_httpx)
    else:
        assert "the connection failed or was dropped before an answer (" in str(from_requests)
        assert "the connection failed or was dropped before an answer (" in str(from_httpx)


def test_a_dropped_connection_after_the_clients_own_deadline_is_a_timeout():
    err = map_failure(requests.ConnectionError(SECRET_URL), REQUESTS_ERRORS, method="m", timeout=2.0, expired=True)
    assert err.code == "TIMEOUT"
    other = map_failure(requests.TooManyRedirects(SECRET_URL), REQUESTS_ERRORS, method="m", timeout=2.0)
    assert (other.code, "s3cr3t" in str(other)) == ("REQUEST_FAILED", False)


def test_the_back_off_home_decides_what_a_refusal_for_load_does():
    rate = Bitrix24RateLimitError("QUERY_LIMIT_EXCEEDED", "Too many requests", status=503)
    blocked = Bitrix24OperationTimeLimitError("OPERATION_TIME_LIMIT", "blocked", status=429)
    server = Bitrix24ServerError("INTERNAL_SERVER_ERROR", "oops", status=500)
    wrong = Bitrix24RequestError("ERROR_METHOD_NOT_FOUND", "no", status=404)
    assert [fills_bucket(e) for e in (rate, blocked, server, wrong)] == [True, False, False, False]
    assert [is_overload(e) for e in (rate, blocked, server, wrong)] == [True, True, True, False]
    assert level_after_rejection(3.0, 49.0) == 49.0
    assert level_after_rejection(60.0, 49.0) == 60.0
    bucket = LeakyBucket(RateLimit(burst=50, per_second=2.0), clock=lambda: 0.0)
    bucket.note_rejected()
    assert bucket.headroom() == 0


def test_the_client_says_how_long_a_method_stays_blocked(sandbox):
    with Bitrix24Client(parse_connection(host=sandbox.webhook_url)) as client:
        assert client.time_until_unblocked("crm.deal.list") is None
        client.engine.limiter.report_blocked("crm.deal.list", time.time() + 30.0)
        left = client.time_until_unblocked("crm.deal.list")
        assert left is not None
        assert 25.0 < left <= 30.0
        assert client.time_until_unblocked("profile") is None


async def test_the_async_client_answers_the_same_asks(sandbox):
    async with AsyncBitrix24Client(parse_connection(host=sandbox.webhook_url)) as client:
        assert client.time_until_unblocked("imopenlines.session.history.get") is None
        assert client.hint("CHAT_ID") == Bitrix24Client.hint("CHAT_ID")


def test_the_hint_of_an_error_code_comes_from_the_client():
    from airflow_provider_bitrix24.client.errors import Bitrix24ApiError
    from airflow_provider_bitrix24.failures import describe

    assert (
        Bitrix24Client.hint("NO_AUTH_FOUND")
        == "the webhook code or token is wrong or revoked; update the Airflow connection"
    )
    assert Bitrix24Client.hint("QUERY_LIMIT_EXCEEDED") is None
    err = Bitrix24ApiError("CANT_SAVE_QUICK_ANSWER", "could not save", method="imopenlines.message.quick.save")
    assert describe(err).endswith(f". Hint: {Bitrix24Client.hint('CANT_SAVE_QUICK_ANSWER')}.")


def test_values_are_read_in_one_place_and_history_re_exports_them():
    from airflow_provider_bitrix24 import history, validation
    from airflow_provider_bitrix24.client import coerce

    for name in ("IntegerError", "cut", "show", "to_int", "MAX_ID"):
        assert getattr(history, name) is getattr(coerce, name)
    assert validation.to_int is coerce.to_int
    assert coerce.read_id("") is None
    assert coerce.read_id("0042") == 42
    for value, why in (("\u00b2", "is not a plain integer"), ("9" * 25, "is out of range"), (-1, "is out of range")):
        with pytest.raises(coerce.IntegerError, match=why):
            coerce.read_id(value)
    with pytest.raises(coerce.IntegerError, match="out of range: the portal accepts ids up to"):
        coerce.to_int(2**63)
    assert coerce.show("x" * 200, 10) == "'xxxxxx..."
