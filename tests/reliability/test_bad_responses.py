"""
Answers no portal should send, and a server that never answers: each ends in a clear error within the timeout.

Every bad answer is tried through the sync hook, the async client the triggers use, and the operator. "Clear"
means: our own exception type, a message that starts with a code saying what went wrong, and no library
exception (``JSONDecodeError``, ``requests``/``urllib3``/``httpx`` errors) anywhere in the chain. "Within the
timeout" means: the call returns after at most its attempts' worth of timeouts, never hangs.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_bitrix24.client import core
from airflow_provider_bitrix24.client.errors import Bitrix24Error
from airflow_provider_bitrix24.client.retry import RetryPolicy
from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook
from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator
from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import set_conn
from tests.reliability.canary import CODE, webhook_conn

TIMEOUT = 0.5
#: Calls that must succeed get longer: on a loaded machine a good answer can take more than half a second.
SUCCESS_TIMEOUT = 2.0
RETRIES = 1
CUTOFF = 0.8
#: Room for a slow, loaded machine on top of a call's own timeouts and waits. A client that ignored its timeout
#: would still far exceed the bound: the hanging and trickling answers below last a minute or more.
SLACK = 6.0


def bound(timeout: float) -> float:
    """The longest a call may take: every attempt times out, and a retry after a timeout waits for the cut-off."""
    return (RETRIES + 1) * timeout + CUTOFF + SLACK


BOUND = bound(TIMEOUT)
METHOD = "imopenlines.message.quick.save"
PARAMS = {"CHAT_ID": SEED.support_chat_id, "MESSAGE_ID": SEED.new_text_message_id}
LIBRARY_NAMES = ("JSONDecodeError", "requests.exceptions", "urllib3.exceptions", "httpx.", "httpcore.", "ssl.SSL")

#: name -> (fault options, the code the caller must see)
BAD_ANSWERS: dict[str, tuple[dict[str, Any], str]] = {
    "html_502": (
        {"kind": "raw", "status": 502, "body": "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"},
        "INVALID_RESPONSE",
    ),
    "empty_body": ({"kind": "raw", "status": 200, "body": "", "content_type": "application/json"}, "EMPTY_RESPONSE"),
    "truncated_json": (
        {
            "kind": "raw",
            "status": 200,
            "body": '{"result": true, "time": {"start": 17',
            "content_type": "application/json",
        },
        "INVALID_RESPONSE",
    ),
    "json_without_result": (
        {"kind": "raw", "status": 200, "body": '{"time": {"start": 1.5}}', "content_type": "application/json"},
        "INVALID_RESPONSE",
    ),
    "200_with_error_body": (
        {
            "kind": "raw",
            "status": 200,
            "body": '{"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}',
            "content_type": "application/json",
        },
        "INTERNAL_SERVER_ERROR",
    ),
    "50_mb_body": (
        {
            "kind": "raw",
            "status": 200,
            "body": '{"result": "',
            "size": 50 * 1024 * 1024,
            "content_type": "application/json",
        },
        "RESPONSE_TOO_LARGE",
    ),
    "never_answers": ({"kind": "hang", "delay": 60}, "TIMEOUT"),
    "nested_100000_deep": (
        {
            "kind": "raw",
            "status": 200,
            "body": '{"result": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "content_type": "application/json",
        },
        "INVALID_RESPONSE",
    ),
    "number_of_5000_digits": (
        {
            "kind": "raw",
            "status": 200,
            "body": '{"result": true, "time": {"operating": ' + "9" * 5000 + "}}",
            "content_type": "application/json",
        },
        "INVALID_RESPONSE",
    ),
}
#: Bad answers that get a timeout of their own. The client must read 32 MB (its body limit) before it can refuse
#: the 50 MB body; a loaded machine needs more than TIMEOUT for that, and would then report TIMEOUT instead.
TIMEOUTS: dict[str, float] = {"50_mb_body": 5.0}

#: Odd but readable values a broken portal could send: the call succeeds and nothing absurd is believed.
ODD_ANSWERS: dict[str, str] = {
    "operating_of_4000_digits": '{"result": true, "time": {"operating": ' + "9" * 4000 + ', "operating_reset_at": 1}}',
    "reset_at_1e18": '{"result": true, "time": {"operating": 900, "operating_reset_at": 1e18}}',
    "reset_at_nan": '{"result": true, "time": {"operating": 900, "operating_reset_at": NaN}}',
    "operating_infinity": '{"result": true, "time": {"operating": Infinity, "operating_reset_at": 1}}',
    "superscript_next": '{"result": true, "next": "\u00b2", "total": "\u0661\u0662\u0663"}',
}


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        core,
        "RetryPolicy",
        functools.partial(RetryPolicy, base_delay=0.01, max_delay=0.05, jitter=0.0, server_cutoff=CUTOFF),
    )


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never reads or answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    for conn in held:
        conn.close()


def _inject(portal: Any, fault: dict[str, Any]) -> None:
    options = dict(fault)
    kind = options.pop("kind")
    portal.inject_fault("*", kind, count=RETRIES + 1, **options)


def _check(exc: BaseException, code: str, elapsed: float, leak_scan: Any, origin: str, limit: float = BOUND) -> None:
    leak_scan.exception(origin, exc)
    text = "".join(traceback.format_exception(exc))
    assert elapsed <= limit, f"took {elapsed:.1f} s"
    assert code in str(exc), str(exc)
    assert not [name for name in LIBRARY_NAMES if name in text], text
    assert "Traceback" not in str(exc)


def _sync_call(conn_id: str) -> Any:
    return Bitrix24Hook(bitrix24_conn_id=conn_id).call(METHOD, PARAMS)


def _async_call(conn_id: str) -> Any:
    async def call() -> Any:
        client = await Bitrix24Hook(bitrix24_conn_id=conn_id).get_async_client()
        try:
            return await client.call(METHOD, PARAMS)
        finally:
            await client.aclose()

    # A safety net above every case's bound: a hanging client fails the test instead of stalling it.
    return asyncio.run(asyncio.wait_for(call(), bound(max([TIMEOUT, *TIMEOUTS.values()])) + 5))


def _operator_call(conn_id: str) -> Any:
    operator = SaveQuickAnswerOperator(
        task_id="save", chat_id=PARAMS["CHAT_ID"], message_id=PARAMS["MESSAGE_ID"], bitrix24_conn_id=conn_id
    )
    return operator.execute(context={})


CALLERS = {"hook": (_sync_call, Bitrix24Error), "async": (_async_call, Bitrix24Error)}
CALLERS["operator"] = (_operator_call, AirflowException)


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("answer", sorted(BAD_ANSWERS))
def test_clear_error_in_time_when_the_answer_is_bad(portal, monkeypatch, leak_scan, answer, caller):
    fault, code = BAD_ANSWERS[answer]
    call, expected = CALLERS[caller]
    timeout = TIMEOUTS.get(answer, TIMEOUT)
    conn_id = webhook_conn(monkeypatch, portal, "rel_bad_answer", timeout=timeout, max_retries=RETRIES)
    _inject(portal, fault)
    started = time.monotonic()
    with pytest.raises(expected) as info:
        call(conn_id)
    _check(info.value, code, time.monotonic() - started, leak_scan, f"{answer} via {caller}", bound(timeout))
    if caller == "operator":
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_timeout_when_the_server_accepts_and_never_answers(monkeypatch, leak_scan, silent_server, caller):
    call, expected = CALLERS[caller]
    host = f"http://127.0.0.1:{silent_server}/rest/1/{CODE}/"
    set_conn(
        monkeypatch,
        "rel_silent",
        {"conn_type": "bitrix24", "host": host, "extra": {"timeout": TIMEOUT, "max_retries": RETRIES}},
    )
    started = time.monotonic()
    with pytest.raises(expected) as info:
        call("rel_silent")
    _check(info.value, "TIMEOUT", time.monotonic() - started, leak_scan, f"silent server via {caller}")


def test_task_succeeds_when_a_bad_answer_comes_once(portal, monkeypatch, leak_scan):
    """The one-off gateway page or truncated answer costs a retry, not the task."""
    conn_id = webhook_conn(monkeypatch, portal, "rel_bad_answer", timeout=SUCCESS_TIMEOUT, max_retries=RETRIES)
    portal.inject_fault("*", "raw", count=1, status=502, body="<html>502 Bad Gateway</html>")
    assert _operator_call(conn_id) == [PARAMS["MESSAGE_ID"]]
    assert portal.stats()["by_status"] == {"502": 1, "200": 1}


@pytest.mark.parametrize("answer", sorted(ODD_ANSWERS))
def test_odd_numbers_in_an_answer_are_tolerated_and_never_believed(portal, monkeypatch, answer):
    conn_id = webhook_conn(monkeypatch, portal, "rel_odd_answer", timeout=SUCCESS_TIMEOUT, max_retries=RETRIES)
    portal.inject_fault("*", "raw", count=1, status=200, body=ODD_ANSWERS[answer], content_type="application/json")
    hook = Bitrix24Hook(bitrix24_conn_id=conn_id)
    envelope = hook.client.run(hook.client.engine.call_flow(METHOD, PARAMS))
    assert envelope.result is True
    assert (envelope.next, envelope.total) == (None, None)
    limiter = hook.client.engine.limiter
    assert limiter.blocked_until(METHOD) is None
    assert limiter.unblocks_at(METHOD) is None
    assert limiter.operating(METHOD) in (0.0, 900.0)
    # The next call goes out at once: no absurd block or wait was taken from the answer.
    started = time.monotonic()
    assert hook.call(METHOD, PARAMS) is True
    assert time.monotonic() - started < BOUND


@pytest.fixture
def trickle_server() -> Iterator[int]:
    """A server that answers headers at once, then a JSON body one byte every 0.1 s (a slow proxy, or worse)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            body = b'{"result": true, "time": {}}' + b" " * 10_000
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            for byte in body:
                if stop.wait(0.1):
                    return
                conn.sendall(bytes([byte]))
        except OSError:
            return
        finally:
            conn.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


@pytest.mark.parametrize("caller", ["hook", "async"])
def test_timeout_bounds_the_whole_answer_when_the_body_trickles(monkeypatch, leak_scan, trickle_server, caller):
    """Every read gets a byte within the timeout, but the whole body would take 17 minutes: cut at the deadline."""
    call, expected = CALLERS[caller]
    host = f"http://127.0.0.1:{trickle_server}/rest/1/{CODE}/"
    set_conn(
        monkeypatch,
        "rel_trickle",
        {"conn_type": "bitrix24", "host": host, "extra": {"timeout": TIMEOUT, "max_retries": RETRIES}},
    )
    started = time.monotonic()
    with pytest.raises(expected) as info:
        call("rel_trickle")
    _check(info.value, "TIMEOUT", time.monotonic() - started, leak_scan, f"trickling body via {caller}")
