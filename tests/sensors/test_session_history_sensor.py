"""SessionHistorySensor in poke, reschedule and deferrable modes, over real HTTP against the sandbox portal."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator
from airflow_provider_bitrix24.sandbox.state import SEED
from airflow_provider_bitrix24.sensors.session_history import SessionHistorySensor
from airflow_provider_bitrix24.triggers.session_history import SessionHistoryTrigger
from tests.conftest import set_conn

try:
    from airflow.sdk.exceptions import AirflowRescheduleException
except ImportError:  # Airflow 2
    from airflow.exceptions import AirflowRescheduleException

SESSION = SEED.support_latest_session_id  # 335, chat 1763
CHAT = SEED.support_chat_id
OPERATOR = SEED.operator_ids[0]
CLIENT = SEED.client_user_ids[0]
HISTORY = "imopenlines.session.history.get"


def _sensor(**kwargs) -> SessionHistorySensor:
    kwargs.setdefault("task_id", "wait")
    kwargs.setdefault("poke_interval", 0.3)
    kwargs.setdefault("timeout", 60)
    return SessionHistorySensor(**kwargs)


def _last_id(sandbox) -> int:
    """The newest message id of the portal so far: the wait only counts messages after it."""
    return sandbox.add_message(SESSION, CLIENT, "still there?")


def _history_calls(sandbox) -> int:
    stats = sandbox.stats()
    return stats["by_method"].get(HISTORY, 0) + stats["batch_commands"]


def _rebuild(trigger: SessionHistoryTrigger) -> SessionHistoryTrigger:
    """What the triggerer does: import the class path and call it with the serialized kwargs."""
    path, kwargs = trigger.serialize()
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))


async def _first_event(trigger: SessionHistoryTrigger, timeout: float = 30) -> dict:
    event = await asyncio.wait_for(trigger.run().asend(None), timeout)
    return event.payload


def _fast_conn(monkeypatch, sandbox, conn_id: str = "b24_fast", **extra) -> str:
    data = json.loads(sandbox.airflow_conn_json("webhook"))
    data["extra"] = {**data.get("extra", {}), **extra}
    set_conn(monkeypatch, conn_id, data)
    return conn_id


# --------------------------------------------------------------------------- waiting for a new message


def _add_after_polls(sandbox, polls: int, author: int, text: str) -> list[int]:
    """Add a message once the portal has answered ``polls`` more history calls, however slow the machine is."""
    added: list[int] = []
    start = _history_calls(sandbox)

    def add() -> None:
        deadline = time.monotonic() + 60
        while _history_calls(sandbox) - start < polls and time.monotonic() < deadline:
            time.sleep(0.01)
        added.append(sandbox.add_message(SESSION, author, text))

    threading.Thread(target=add, daemon=True).start()
    return added


def test_poke_mode_waits_for_a_message_that_appears_later(sandbox, webhook_conn):
    after = _last_id(sandbox)
    _add_after_polls(sandbox, 1, CLIENT, "a client message does not count")
    added = _add_after_polls(sandbox, 3, OPERATOR, "Try the Observers tab")
    result = _sensor(session_id=SESSION, after_message_id=after, author="operator").execute(context={})
    (expected,) = added
    assert [m["id"] for m in result] == [expected]
    assert result[0] == {
        "id": expected,
        "chat_id": CHAT,
        "session_id": SESSION,
        "author_id": OPERATOR,
        "author_type": "operator",
        "date": result[0]["date"],
        "text": "Try the Observers tab",
    }
    datetime.fromisoformat(result[0]["date"])
    assert _history_calls(sandbox) >= 3  # it waited, polling more than once


def test_reschedule_mode_waits_for_a_message_that_appears_later(sandbox, webhook_conn, airflow_db):
    after = _last_id(sandbox)
    expected = None
    first_try = datetime.now(timezone.utc)
    ti = SimpleNamespace(
        dag_id="d",
        task_id="wait",
        run_id="r",
        map_index=-1,
        try_number=1,
        max_tries=0,
        get_first_reschedule_date=lambda context: first_try,
    )
    reschedules = 0
    deadline = time.monotonic() + 30
    while True:
        # Each reschedule starts a fresh task process: a fresh operator object.
        sensor = _sensor(session_id=str(SESSION), after_message_id=str(after), author="operator", mode="reschedule")
        try:
            result = sensor.execute(context={"ti": ti})
            break
        except AirflowRescheduleException as exc:
            reschedules += 1
            assert time.monotonic() < deadline
            if reschedules == 2:
                # The reply comes only after two looks that found nothing (not after a fixed delay, which a slow
                # machine could spend before the first look).
                expected = sandbox.add_message(SESSION, OPERATOR, "Fixed on our side")
            time.sleep(max(0.0, (exc.reschedule_date - datetime.now(timezone.utc)).total_seconds()))
    assert [m["id"] for m in result] == [expected]
    assert reschedules == 2  # found by the first look after it appeared


def test_deferrable_mode_waits_in_the_trigger_for_a_message_that_appears_later(sandbox, webhook_conn):
    after = _last_id(sandbox)
    sensor = _sensor(session_id=SESSION, after_message_id=after, author=["operator", "bot"], deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    trigger = deferred.value.trigger
    assert isinstance(trigger, SessionHistoryTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout.total_seconds() == 60
    assert trigger.serialize()[1] == {
        "bitrix24_conn_id": "bitrix24_default",
        "session_id": SESSION,
        "chat_id": None,
        "after_message_id": after,
        "authors": ["bot", "operator"],
        "text_pattern": None,
        "min_messages": 1,
        "poll_interval": 0.3,
    }
    polls_before = _history_calls(sandbox)
    added = _add_after_polls(sandbox, 3, OPERATOR, "Here is the answer")
    event = asyncio.run(_first_event(_rebuild(trigger)))
    assert _history_calls(sandbox) - polls_before >= 3  # it waited, polling more than once
    assert event["status"] == "success"
    result = sensor.execute_complete(context={}, event=event)
    assert [m["id"] for m in result] == added
    assert result[0]["author_type"] == "operator"


def test_deferrable_mode_returns_at_once_when_the_messages_are_already_there(sandbox, webhook_conn):
    sensor = _sensor(session_id=SEED.support_session_id, author="client", min_messages=2, deferrable=True)
    result = sensor.execute(context={})  # no TaskDeferred
    assert [m["id"] for m in result] == [85801, 85809]
    assert sandbox.stats()["requests"] == 1


def test_pattern_and_min_messages(sandbox, webhook_conn):
    after = _last_id(sandbox)
    sandbox.add_message(SESSION, OPERATOR, "Order #123 is on its way")
    sandbox.add_message(SESSION, OPERATOR, "anything else?")
    third = sandbox.add_message(SESSION, OPERATOR, "Order #124 shipped", delay=1.5)
    result = _sensor(session_id=SESSION, after_message_id=after, text_pattern=r"Order #\d+", min_messages=2).execute(
        context={}
    )
    assert [m["text"] for m in result] == ["Order #123 is on its way", "Order #124 shipped"]
    assert result[-1]["id"] == third


def test_chat_id_alone_reads_the_latest_session_and_session_id_wins(sandbox, webhook_conn):
    latest = _sensor(chat_id=str(CHAT), author="bot").execute(context={})
    assert {m["session_id"] for m in latest} == {SEED.support_latest_session_id}
    both = _sensor(session_id=SEED.multi_session_ids[0], chat_id=CHAT, author="any").execute(context={})
    assert {m["session_id"] for m in both} == {SEED.multi_session_ids[0]}
    assert {m["chat_id"] for m in both} == {SEED.multi_session_chat_id}


def test_output_chains_into_save_quick_answer(sandbox, webhook_conn):
    after = _last_id(sandbox)
    reply = sandbox.add_message(SESSION, OPERATOR, "Restart the app, then open Observers", delay=0.5)
    messages = _sensor(session_id=SESSION, after_message_id=after, author="operator").execute(context={})
    saved = SaveQuickAnswerOperator(task_id="save", chat_id=CHAT, message_id=messages).execute(context={})
    assert saved == [reply]
    assert any(a["message_id"] == reply for a in sandbox.quick_answers())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ({"session_id": SEED.restricted_session_id}, "ACCESS_DENIED"),
        ({"session_id": 999_999}, "ACCESS_DENIED"),
        ({"chat_id": SEED.no_session_chat_id}, "INVALID_SESSION_ID"),
    ],
)
@pytest.mark.parametrize("deferrable", [False, True])
def test_permanent_error_fails_at_once_despite_a_long_timeout(sandbox, webhook_conn, target, code, deferrable):
    sensor = _sensor(timeout=3600, poke_interval=60, deferrable=deferrable, **target)
    started = time.monotonic()
    with pytest.raises(AirflowFailException, match=rf"^{code}: .*Hint: ") as info:
        sensor.execute(context={})
    elapsed = time.monotonic() - started
    assert elapsed < 10
    assert sandbox.stats()["requests"] == 1
    print(f"\n{code} ended the sensor (deferrable={deferrable}) in {elapsed:.3f} s with timeout=3600")
    assert "sandbox-webhook-0000" not in str(info.value)


def test_permanent_error_in_the_trigger_fails_the_task_at_once(sandbox, webhook_conn):
    after = _last_id(sandbox)
    sensor = _sensor(session_id=SESSION, after_message_id=after, timeout=3600, poke_interval=60, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    # While deferred, the webhook loses the scope: every poll of the trigger now fails for good.
    sandbox.inject_fault(HISTORY, "error", count=5, error="insufficient_scope", in_batch=True)
    started = time.monotonic()
    event = asyncio.run(_first_event(_rebuild(deferred.value.trigger)))
    assert event["status"] == "error"
    assert event["code"] == "insufficient_scope"
    assert event["retryable"] is False
    with pytest.raises(AirflowFailException, match=r"^insufficient_scope: .*Hint: add the 'imopenlines' scope"):
        sensor.execute_complete(context={}, event=event)
    elapsed = time.monotonic() - started
    print(f"\ninsufficient_scope ended the deferred sensor in {elapsed:.3f} s with timeout=3600")
    assert elapsed < 10


def test_transient_errors_never_end_the_wait(sandbox, monkeypatch, caplog, capsys):
    conn_id = _fast_conn(monkeypatch, sandbox, max_retries=0)
    after = _last_id(sandbox)
    sandbox.inject_fault(HISTORY, "error", count=2, error="QUERY_LIMIT_EXCEEDED", status=503)
    sandbox.inject_fault(HISTORY, "error", count=1, error="INTERNAL_SERVER_ERROR", status=500)
    sandbox.inject_fault(HISTORY, "raw", count=1, status=502, body="<html>Bad gateway</html>")
    expected = sandbox.add_message(SESSION, OPERATOR, "Back online", delay=1)
    sensor = _sensor(session_id=SESSION, after_message_id=after, author="operator", bitrix24_conn_id=conn_id)
    with caplog.at_level("WARNING"):
        result = sensor.execute(context={})
    assert [m["id"] for m in result] == [expected]
    errors = sandbox.stats()["errors"]
    assert errors.get("QUERY_LIMIT_EXCEEDED") == 2
    assert errors.get("INTERNAL_SERVER_ERROR") == 1
    # Airflow 3 logs through structlog to stdout, Airflow 2 through stdlib logging records. Counted in those two
    # only: a handler an earlier test left on a closed stream prints "Logging error" tracebacks, repeating each
    # message, to stderr.
    records = [r.getMessage() for r in caplog.records if "will try again" in r.getMessage()]
    printed = [line for line in capsys.readouterr().out.splitlines() if "will try again" in line]
    assert len(records or printed) == 4, records or printed


def test_transient_errors_in_the_trigger_only_delay_the_next_poll(sandbox, monkeypatch):
    conn_id = _fast_conn(monkeypatch, sandbox, max_retries=0)
    after = _last_id(sandbox)
    sandbox.inject_fault("batch", "error", count=2, error="INTERNAL_SERVER_ERROR", status=500)
    expected = sandbox.add_message(SESSION, OPERATOR, "Sorry for the wait", delay=0.5)
    trigger = SessionHistoryTrigger(
        bitrix24_conn_id=conn_id, session_id=SESSION, after_message_id=after, authors=["operator"], poll_interval=0.2
    )
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == "success", event
    assert [m["id"] for m in event["messages"]] == [expected]
    stats = sandbox.stats()
    assert stats["errors"].get("INTERNAL_SERVER_ERROR") == 2


def test_a_blocked_history_method_is_not_polled_until_it_unblocks(sandbox, monkeypatch):
    """OPERATION_TIME_LIMIT without a reset time: the wait holds the method 10 s instead of polling every 0.2 s."""
    conn_id = _fast_conn(monkeypatch, sandbox, max_retries=0)
    after = _last_id(sandbox)
    sandbox.inject_fault(HISTORY, "error", count=1, error="OPERATION_TIME_LIMIT", in_batch=True)
    expected = sandbox.add_message(SESSION, OPERATOR, "Back from the limit", delay=0.5)
    trigger = SessionHistoryTrigger(
        bitrix24_conn_id=conn_id, session_id=SESSION, after_message_id=after, authors=["operator"], poll_interval=0.2
    )
    started = time.monotonic()
    event = asyncio.run(_first_event(trigger, timeout=40))
    elapsed = time.monotonic() - started
    assert event["status"] == "success", event
    assert [m["id"] for m in event["messages"]] == [expected]
    stats = sandbox.stats()
    assert stats["batch_errors"].get("OPERATION_TIME_LIMIT") == 1
    assert elapsed >= 10.0
    # One refused poll, then nothing until the method unblocks (polling every 0.2 s would have sent ~50).
    assert stats["by_method"]["batch"] <= 3


def test_soft_fail_skips_on_a_permanent_error(sandbox, webhook_conn):
    for deferrable in (False, True):
        sensor = _sensor(session_id=SEED.restricted_session_id, soft_fail=True, deferrable=deferrable)
        with pytest.raises(AirflowSkipException):
            sensor.execute(context={})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"session_id": SESSION, "text_pattern": "(?P<broken"}, r"^text_pattern: '\(\?P<broken' is not a valid"),
        ({"session_id": SESSION, "author": "customer"}, r"^author: 'customer' is not an author type"),
        ({"session_id": SESSION, "min_messages": 0}, r"^min_messages: 0 is not a positive integer"),
        ({"session_id": "abc"}, r"^session_id: 'abc' is not a number"),
        ({"chat_id": "0"}, r"^chat_id: '0' is not a positive integer"),
        ({}, r"^session_id: session_id or chat_id is required"),
        ({"session_id": SESSION, "after_message_id": "x1"}, r"^after_message_id: 'x1' is not a message id"),
        ({"session_id": SESSION, "text_pattern": r"(\w+)\s\1"}, r"^text_pattern: .* in RE2 syntax \(invalid escape"),
        ({"session_id": SESSION, "text_pattern": r"(?<!not )paid"}, r"^text_pattern: .* in RE2 syntax \(invalid perl"),
        ({"session_id": "\u0663\u0663\u0665"}, r"^session_id: '٣٣٥' is not a number: only the ASCII digits 0-9"),
        ({"chat_id": "9" * 20}, r"^chat_id: '9{20}' is out of range: the portal accepts ids up to 9223372036854775807"),
        ({"session_id": SESSION, "min_messages": "\u00b2"}, r"^min_messages: '²' is not a positive integer: it is no"),
    ],
)
@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_bad_arguments_fail_before_any_request(sandbox, webhook_conn, kwargs, message, mode):
    sensor = _sensor(deferrable=mode == "deferrable", mode="reschedule" if mode == "reschedule" else "poke", **kwargs)
    with pytest.raises(AirflowFailException, match=message):
        sensor.execute(context={})
    assert sandbox.stats()["requests"] == 0


# --------------------------------------------------------------------------- incremental matching


def test_each_poke_of_a_try_searches_only_the_new_messages(sandbox, webhook_conn):
    after = _last_id(sandbox)
    for number in range(30):
        sandbox.add_message(SESSION, CLIENT, f"question {number}")
    sensor = _sensor(session_id=SESSION, after_message_id=after, text_pattern=r"(?i)^refund", min_messages=2)
    assert sensor.poke(context={}).is_done is False
    matcher = sensor._matcher
    older = matcher.seen - 30  # the session's messages up to ``after``: read, never searched
    assert matcher.searches == 30
    assert sensor.poke(context={}).is_done is False
    assert (matcher.seen - older, matcher.searches) == (30, 30)  # nothing new: nothing searched
    first = sandbox.add_message(SESSION, CLIENT, "Refund please")
    assert sensor.poke(context={}).is_done is False
    assert (matcher.seen - older, matcher.searches) == (31, 31)
    second = sandbox.add_message(SESSION, CLIENT, "REFUND NOW")
    done = sensor.poke(context={})
    assert done.is_done is True
    assert [m["id"] for m in done.xcom_value] == [first, second]
    assert matcher.searches == 32


def test_reschedule_mode_reads_only_the_new_messages_at_each_poke(sandbox, webhook_conn, airflow_db):
    """Each poke is a new process and a new operator: it goes on from what the earlier pokes kept."""
    from airflow.models.variable import Variable

    after = _last_id(sandbox)
    for number in range(200):
        sandbox.add_message(SESSION, CLIENT, f"question {number}")
    first = sandbox.add_message(SESSION, CLIENT, "Refund please")
    started = datetime.now(timezone.utc)
    ti = SimpleNamespace(
        dag_id="d_resume",
        task_id="wait",
        run_id="r",
        map_index=-1,
        try_number=1,
        max_tries=0,
        get_first_reschedule_date=lambda context: started,
    )

    def poke() -> tuple[SessionHistorySensor, list | None]:
        sensor = _sensor(
            session_id=SESSION,
            after_message_id=after,
            text_pattern=r"(?i)^refund",
            min_messages=2,
            mode="reschedule",
            poke_interval=0,
        )
        try:
            return sensor, sensor.execute(context={"ti": ti})
        except AirflowRescheduleException:
            return sensor, None

    sensor, result = poke()
    assert result is None
    older = sensor._matcher.seen - 201  # the session's messages up to ``after``: read, never searched
    assert sensor._matcher.searches == 201
    sensor, result = poke()
    assert result is None
    assert (sensor._matcher.seen - older, sensor._matcher.searches) == (201, 0)  # nothing new: nothing searched
    assert [m["id"] for m in sensor._matcher.matches] == [first]  # kept, not searched again
    for number in range(3):
        sandbox.add_message(SESSION, CLIENT, f"more {number}")
    sensor, result = poke()
    assert result is None
    assert (sensor._matcher.seen - older, sensor._matcher.searches) == (204, 3)
    second = sandbox.add_message(SESSION, CLIENT, "REFUND NOW")
    sensor, result = poke()
    assert [m["id"] for m in result] == [first, second]
    assert [m["text"] for m in result] == ["Refund please", "REFUND NOW"]
    assert sensor._matcher.searches == 1
    # The wait is over: what it kept is gone.
    assert Variable.get(sensor._state_key({"ti": ti}), default_var=None) is None


def test_reschedule_mode_forgets_what_it_kept_when_the_wait_fails(sandbox, webhook_conn, airflow_db):
    from airflow.models.variable import Variable

    started = datetime.now(timezone.utc)
    ti = SimpleNamespace(
        dag_id="d_forget",
        task_id="wait",
        run_id="r",
        map_index=-1,
        try_number=1,
        max_tries=0,
        get_first_reschedule_date=lambda context: started,
    )
    sensor = _sensor(session_id=SESSION, text_pattern="no such text", mode="reschedule")
    with pytest.raises(AirflowRescheduleException):
        sensor.execute(context={"ti": ti})
    key = sensor._state_key({"ti": ti})
    kept = json.loads(Variable.get(key))
    assert kept["read"] > 0
    assert kept["matched"] == []
    sandbox.inject_fault(HISTORY, "error", error="ACCESS_DENIED")
    with pytest.raises(AirflowFailException, match=r"^ACCESS_DENIED"):
        _sensor(session_id=SESSION, text_pattern="no such text", mode="reschedule").execute(context={"ti": ti})
    assert Variable.get(key, default_var=None) is None


def test_an_unreadable_answer_fails_the_poke_with_a_response_error(sandbox, webhook_conn, monkeypatch):
    sensor = _sensor(session_id=SESSION)
    answer = {"sessionId": 335, "message": {"1": {"id": "\u00b2", "senderid": "2", "text": "hi"}}}
    monkeypatch.setattr(type(sensor.hook), "call", lambda self, method, params=None: answer)
    with pytest.raises(
        AirflowFailException, match=r"^INVALID_RESPONSE: the history of session 335 cannot be read: messa"
    ):
        sensor.execute(context={})


# --------------------------------------------------------------------------- execute_complete


def test_execute_complete_maps_events_like_poke_mode():
    sensor = _sensor(session_id=SESSION)
    messages = [{"id": 1, "text": "x"}]
    assert sensor.execute_complete(context={}, event={"status": "success", "messages": messages}) == messages
    permanent = {
        "status": "error",
        "code": "ACCESS_DENIED",
        "message": "ACCESS_DENIED: no (HTTP 400, method imopenlines.session.history.get)",
        "description": "no",
        "http_status": 400,
        "method": HISTORY,
        "retryable": False,
    }
    with pytest.raises(AirflowFailException, match=r"^ACCESS_DENIED: no \(HTTP 400, method .*\)\. Hint: "):
        sensor.execute_complete(context={}, event=permanent)
    transient = {**permanent, "code": "TIMEOUT", "description": "slow", "retryable": True}
    with pytest.raises(AirflowException, match=r"^TIMEOUT: slow") as info:
        sensor.execute_complete(context={}, event=transient)
    assert not isinstance(info.value, AirflowFailException)
    invalid = {"status": "error", "code": "INVALID_ARGUMENT", "message": "text_pattern: bad", "retryable": False}
    with pytest.raises(AirflowFailException, match=r"^text_pattern: bad$"):
        sensor.execute_complete(context={}, event=invalid)
    crash = {"status": "error", "code": "KeyError", "message": "KeyError: 'x'", "retryable": True}
    with pytest.raises(AirflowException, match="KeyError") as info:
        sensor.execute_complete(context={}, event=crash)
    assert not isinstance(info.value, AirflowFailException)
    with pytest.raises(AirflowException, match="without an event"):
        sensor.execute_complete(context={}, event=None)


def test_soft_fail_applies_to_errors_after_deferral():
    sensor = _sensor(session_id=SESSION, soft_fail=True)
    event = {"status": "error", "code": "ACCESS_DENIED", "description": "", "retryable": False, "message": ""}
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": event}, context={})


# --------------------------------------------------------------------------- parsing cost


def test_importing_for_dag_parsing_loads_no_http_stack():
    from tests.conftest import ROOT

    modules = [
        "airflow_provider_bitrix24.sensors.session_history",
        "airflow_provider_bitrix24.triggers.session_history",
        "example_dags.example_bitrix24_session_sensor",
    ]
    code = (
        "import importlib, json, sys, airflow\n"
        "found = {}\n"
        f"for name in {modules!r}:\n"
        "    before = set(sys.modules)\n"
        "    importlib.import_module(name)\n"
        "    new = set(sys.modules) - before\n"
        "    found[name] = sorted(m for m in new if m.split('.')[0] in {'requests', 'httpx', 'urllib3', 'httpcore'})\n"
        "print(json.dumps(found))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(ROOT))
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {name: [] for name in modules}
