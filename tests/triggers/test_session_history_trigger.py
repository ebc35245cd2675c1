"""SessionHistoryTrigger and its shared poller against the sandbox portal."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import time

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_bitrix24.sandbox.state import SEED
from airflow_provider_bitrix24.triggers import _poller
from airflow_provider_bitrix24.triggers.session_history import SessionHistoryTrigger
from tests.conftest import set_conn

CLASSPATH = "airflow_provider_bitrix24.triggers.session_history.SessionHistoryTrigger"
SESSION = SEED.support_latest_session_id
OPERATOR = SEED.operator_ids[0]
CLIENT = SEED.client_user_ids[0]
WEBHOOK_CODE = "sandbox-webhook-0000"


def _trigger(**kwargs) -> SessionHistoryTrigger:
    kwargs.setdefault("bitrix24_conn_id", "bitrix24_default")
    kwargs.setdefault("poll_interval", 0.2)
    return SessionHistoryTrigger(**kwargs)


async def _events(triggers, timeout: float = 30) -> list[dict]:
    async def one(trigger):
        event = await trigger.run().asend(None)
        assert isinstance(event, TriggerEvent)
        return event.payload

    return await asyncio.wait_for(asyncio.gather(*(one(t) for t in triggers)), timeout)


def _after(sandbox) -> int:
    return sandbox.add_message(SESSION, CLIENT, "anyone?")


def test_serialize_round_trips_and_carries_no_secret(sandbox, webhook_conn):
    trigger = SessionHistoryTrigger(
        bitrix24_conn_id=webhook_conn,
        session_id=335,
        chat_id=1763,
        after_message_id=85847,
        authors=("operator", "bot"),
        text_pattern=r"(?i)observers?",
        min_messages=2,
        poll_interval=30,
    )
    path, kwargs = trigger.serialize()
    assert path == CLASSPATH
    assert kwargs == {
        "bitrix24_conn_id": "bitrix24_default",
        "session_id": 335,
        "chat_id": 1763,
        "after_message_id": 85847,
        "authors": ["operator", "bot"],
        "text_pattern": "(?i)observers?",
        "min_messages": 2,
        "poll_interval": 30.0,
    }
    assert json.loads(json.dumps(kwargs)) == kwargs
    module, name = path.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    for text in (repr(kwargs), repr(trigger)):
        assert WEBHOOK_CODE not in text
        assert sandbox.base_url not in text


def test_triggers_on_the_same_portal_share_one_batch_request(sandbox, webhook_conn):
    sessions = [321, 335, 343, 351, 357, 365, 371]
    triggers = [_trigger(session_id=s) for s in sessions]
    triggers += [_trigger(session_id=335, authors=["bot"]), _trigger(chat_id=1763, authors=["client"])]
    triggers += [_trigger(session_id=321, authors=["system"]), _trigger(session_id=321, text_pattern="Thank you")]
    events = asyncio.run(_events(triggers))
    assert all(e["status"] == "success" for e in events), events
    stats = sandbox.stats()
    assert stats["requests"] == 1
    assert stats["by_method"] == {"batch": 1}
    assert stats["batch_commands"] == 8  # 11 waits, 8 distinct targets
    assert {m["session_id"] for m in events[0]["messages"]} == {321}
    assert [m["author_type"] for m in events[7]["messages"]] == ["bot"]
    assert {m["session_id"] for m in events[8]["messages"]} == {335}
    assert [m["id"] for m in events[9]["messages"]] == [SEED.system_message_id]
    assert [m["id"] for m in events[10]["messages"]] == [85809, SEED.same_text_message_id]
    assert _poller._pollers == {}


def test_one_session_failing_does_not_disturb_the_others(sandbox, webhook_conn):
    after = _after(sandbox)
    expected = sandbox.add_message(SESSION, OPERATOR, "I am here", delay=0.6)
    denied, waiting, missing = asyncio.run(
        _events(
            [
                _trigger(session_id=SEED.restricted_session_id),
                _trigger(session_id=SESSION, after_message_id=after, authors=["operator"]),
                _trigger(chat_id=SEED.no_session_chat_id),
            ]
        )
    )
    assert denied["status"] == "error"
    assert denied["code"] == "ACCESS_DENIED"
    assert denied["retryable"] is False
    assert denied["message"].startswith("ACCESS_DENIED: ")
    assert missing["code"] == "INVALID_SESSION_ID"
    assert waiting["status"] == "success"
    assert [m["id"] for m in waiting["messages"]] == [expected]


def test_bad_credential_ends_every_wait_with_an_error_event(sandbox, monkeypatch):
    data = json.loads(sandbox.airflow_conn_json("webhook"))
    data["host"] = data["host"].replace(WEBHOOK_CODE, "fake-webhook-9999")
    set_conn(monkeypatch, "b24_wrong", data)
    triggers = [_trigger(bitrix24_conn_id="b24_wrong", session_id=s) for s in (321, 335, 343)]
    events = asyncio.run(_events(triggers))
    # A wrong webhook code is INVALID_CREDENTIALS (401) on real portals.
    assert {e["code"] for e in events} == {"INVALID_CREDENTIALS"}
    assert all(e["status"] == "error" and e["retryable"] is False for e in events)
    assert sandbox.stats()["requests"] == 1
    assert "fake-webhook-9999" not in repr(events)


def test_missing_connection_and_bad_pattern_become_error_events(sandbox, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_B24_MISSING", raising=False)
    missing, bad_pattern, no_target, bad_id = asyncio.run(
        _events(
            [
                _trigger(bitrix24_conn_id="b24_missing", session_id=SESSION),
                _trigger(session_id=SESSION, text_pattern="[unclosed"),
                _trigger(),
                _trigger(session_id="abc"),
            ]
        )
    )
    assert missing["status"] == "error"
    assert missing["retryable"] is True
    assert "b24_missing" in missing["message"]
    assert bad_pattern == {
        "status": "error",
        "code": "INVALID_ARGUMENT",
        "message": bad_pattern["message"],
        "retryable": False,
    }
    assert bad_pattern["message"].startswith("text_pattern: '[unclosed' is not a valid regular expression")
    assert no_target["code"] == "INVALID_ARGUMENT"
    assert bad_id["code"] == "INVALID_ARGUMENT"
    assert bad_id["message"] == "session_id: 'abc' is not a positive integer"
    assert sandbox.stats()["requests"] == 0


async def _subscriptions(count: int, timeout: float = 10) -> tuple[_poller.SessionPoller, list[_poller.Subscription]]:
    """The one poller of the loop once it holds ``count`` subscriptions and has built its client."""
    end = time.monotonic() + timeout
    while True:
        pollers = list(_poller._pollers.values())
        if len(pollers) == 1 and pollers[0].subscriptions == count and pollers[0]._client is not None:
            return pollers[0], list(pollers[0]._subscriptions)
        assert time.monotonic() < end, f"no poller with {count} subscription(s) and a client after {timeout:g} s"
        await asyncio.sleep(0.01)


def test_each_wait_keeps_its_own_poll_interval(sandbox, webhook_conn):
    fast_interval, slow_interval = 0.25, 1.0
    after = _after(sandbox)
    started = time.monotonic()
    sandbox.add_message(SESSION, OPERATOR, "done", delay=2.2)

    async def scenario():
        fast = _trigger(session_id=SESSION, after_message_id=after, authors=["operator"], poll_interval=fast_interval)
        slow = _trigger(session_id=SEED.sales_session_id, authors=["system"], poll_interval=slow_interval)
        slow_task = asyncio.ensure_future(slow.run().asend(None))
        fast_task = asyncio.ensure_future(_events([fast]))
        _, subscriptions = await _subscriptions(2)
        by_target = {s.target: s for s in subscriptions}
        fast_subscription = by_target[("SESSION_ID", SESSION)]
        slow_subscription = by_target[("SESSION_ID", SEED.sales_session_id)]
        (event,) = await fast_task
        elapsed = time.monotonic() - started
        fast_polls, slow_polls = fast_subscription.polls, slow_subscription.polls
        slow_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow_task
        return event, elapsed, fast_polls, slow_polls

    event, elapsed, fast_polls, slow_polls = asyncio.run(scenario())
    assert event["status"] == "success"
    assert elapsed >= 2.2
    counts = f"{fast_polls} fast and {slow_polls} slow polls in {elapsed:.2f} s"
    # Each poll is due an interval after the previous answer, so how slow the answers are changes the counts
    # (~9 fast and ~3 slow ones with instant answers) but not their ratio: about 3 fast polls per slow one (a slow
    # wait due soon rides along with a fast poll). One interval shared by both waits makes the counts equal.
    assert fast_polls >= 2 * slow_polls, counts
    # The slow wait polled at once, then at most once per interval, less the share by which a poll may come early.
    assert 2 <= slow_polls <= elapsed / (slow_interval * (1 - _poller.EARLY_SHARE)) + 1, counts
    # Every request carried the fast wait, the slow one, or both (merged when both were due).
    requests = sandbox.stats()["requests"]
    assert fast_polls <= requests <= fast_polls + slow_polls, (requests, counts)


def test_cancelled_trigger_unsubscribes_and_the_idle_poller_stops(sandbox, webhook_conn):
    after = _after(sandbox)

    async def scenario():
        task = asyncio.ensure_future(_trigger(session_id=SESSION, after_message_id=after).run().asend(None))
        poller, _ = await _subscriptions(1)  # subscribed, and its client built
        client = poller._client
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert poller._task is not None
        await asyncio.wait({poller._task}, timeout=10)  # it stops, and closes its client, on its own
        return poller, client

    poller, client = asyncio.run(scenario())
    assert poller.subscriptions == 0
    assert _poller._pollers == {}
    assert poller._task is not None
    assert poller._task.done()
    assert client._http is None  # closed
    polls = sandbox.stats()["requests"]
    time.sleep(0.5)
    assert sandbox.stats()["requests"] == polls  # nothing polls any more


def test_pollers_are_separate_per_connection(sandbox, webhook_conn, monkeypatch):
    set_conn(monkeypatch, "b24_other", sandbox.airflow_conn_json("webhook"))
    events = asyncio.run(_events([_trigger(session_id=321), _trigger(bitrix24_conn_id="b24_other", session_id=335)]))
    assert [e["status"] for e in events] == ["success", "success"]
    assert sandbox.stats()["by_method"] == {"batch": 2}


def test_an_answer_cut_short_by_the_time_bound_is_read_on_at_the_next_round(sandbox, webhook_conn, monkeypatch):
    # A bound of 0 s: each poll searches one new message, then leaves the rest for the next answer.
    monkeypatch.setattr(_poller, "MATCH_SECONDS", 0.0)
    after = _after(sandbox)
    for text in ("one", "two", "three", "four", "five"):
        sandbox.add_message(SESSION, CLIENT, text)
    trigger = _trigger(
        session_id=SESSION, after_message_id=after, authors=["client"], text_pattern="five", poll_interval=60
    )
    started = time.monotonic()
    (event,) = asyncio.run(_events([trigger], timeout=20))
    assert event["status"] == "success", event
    assert [m["text"] for m in event["messages"]] == ["five"]
    # Five polls, one message each, back to back: not five intervals of 60 s.
    assert time.monotonic() - started < 20
    assert sandbox.stats()["batch_commands"] >= 5


def test_the_loop_gets_a_turn_between_the_waits_of_one_answer(sandbox, webhook_conn, monkeypatch):
    from airflow_provider_bitrix24 import history

    feed = history.HistoryMatcher.feed
    marks: list[str] = []

    def slow_feed(self, *args, **kwargs):
        marks.append("feed")
        end = time.perf_counter() + 0.03  # a wait's read of its answer, up to its time bound
        while time.perf_counter() < end:
            pass
        return feed(self, *args, **kwargs)

    monkeypatch.setattr(history.HistoryMatcher, "feed", slow_feed)
    after = _after(sandbox)
    sandbox.add_message(SESSION, OPERATOR, "done")

    async def scenario():
        async def heartbeat():
            while True:
                await asyncio.sleep(0.005)  # due again during each 30 ms read
                marks.append("beat")

        beat = asyncio.ensure_future(heartbeat())
        waits = [_trigger(session_id=SESSION, after_message_id=after, authors=["operator"]) for _ in range(20)]
        events = await _events(waits)
        beat.cancel()
        return events

    events = asyncio.run(scenario())
    assert all(e["status"] == "success" for e in events)
    assert sandbox.stats()["requests"] == 1  # the 20 waits were read from one answer
    # Counted in turns, not in time: a poller that reads the 20 waits back to back lets no beat in between the
    # first read and the last; one that yields after each read lets the heartbeat in about once per read.
    first, last = marks.index("feed"), len(marks) - 1 - marks[::-1].index("feed")
    assert marks.count("feed") == 20, marks
    assert marks[first:last].count("beat") >= 3, marks


def test_an_oversized_answer_ends_only_the_wait_it_concerns(sandbox, webhook_conn, monkeypatch):
    """One session's history is larger than the client accepts: its wait ends, the others of the batch go on."""
    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

    parse = Bitrix24Hook.config_from_connection

    def small_limit(conn):
        return dataclasses.replace(parse(conn), max_body_bytes=100_000)

    monkeypatch.setattr(Bitrix24Hook, "config_from_connection", staticmethod(small_limit))
    sessions = [321, 335, 343, 351, 357, 365, 371]
    huge = 343
    sandbox.add_message(huge, CLIENT, "x" * 150_000)
    events = asyncio.run(_events([_trigger(session_id=s) for s in sessions]))
    by_session = dict(zip(sessions, events, strict=True))
    failed = by_session.pop(huge)
    assert failed["status"] == "error"
    assert failed["code"] == "RESPONSE_TOO_LARGE"
    assert failed["retryable"] is False
    assert failed["message"].startswith("RESPONSE_TOO_LARGE: ")
    for session, event in by_session.items():
        assert event["status"] == "success", (session, event)
        assert {m["session_id"] for m in event["messages"]} == {session}
    # One request for all, then halves down to the oversized one: a few requests, not one per session per round.
    assert sandbox.stats()["requests"] <= 1 + 2 * 3
    assert _poller._pollers == {}
