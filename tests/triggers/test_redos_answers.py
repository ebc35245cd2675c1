"""
One history answer that cannot be read ends no wait but its own, and refused patterns end a trigger at once.

Real ``SessionHistoryTrigger``s share one poller and one ``batch`` request against the sandbox portal; the answer
of chosen commands is replaced, between the client and the poller, by what a broken or hostile portal could send.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_bitrix24.client.aio import AsyncBitrix24Client
from airflow_provider_bitrix24.sandbox.state import SEED
from airflow_provider_bitrix24.triggers import _poller
from airflow_provider_bitrix24.triggers.session_history import SessionHistoryTrigger

CLIENT = SEED.client_user_ids[0]
OPERATOR = SEED.operator_ids[0]


class Exploding(Mapping):
    """A result whose reading raises something no portal answer should cause."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("the result cannot be read")

    def __iter__(self) -> Iterator[str]:
        return iter(["sessionId"])

    def __len__(self) -> int:
        return 1


def _corrupt(result: Any, how: str) -> Any:
    messages = dict(result["message"])
    first = next(iter(messages))
    if how == "superscript id":
        messages[first] = {**messages[first], "id": "\u00b2"}
    elif how == "huge id":
        messages[first] = {**messages[first], "id": 10**30}
    elif how == "nested text":
        nested: list[Any] = []
        for _ in range(10_000):
            nested = [nested]
        messages[first] = {**messages[first], "text": nested}
    elif how == "exploding":
        return Exploding()
    return {**result, "message": messages}


@pytest.fixture
def corrupt(monkeypatch):
    """``corrupt({session_id: how})``: the answers of those sessions' commands, changed on their way to the poller."""
    plan: dict[int, str] = {}
    real = AsyncBitrix24Client.batch

    async def batch(self, commands, *, halt=False):
        items = await real(self, commands, halt=halt)
        changed = []
        for item in items:
            how = plan.get(int(item.key.removeprefix("s")))  # the poller names a command s<session id>
            if how is not None and item.result is not None:
                item = dataclasses.replace(item, result=_corrupt(item.result, how))
            changed.append(item)
        return changed

    monkeypatch.setattr(AsyncBitrix24Client, "batch", batch)
    return plan.update


async def _events(triggers: list[SessionHistoryTrigger], timeout: float = 30) -> list[dict[str, Any]]:
    async def one(trigger: SessionHistoryTrigger) -> dict[str, Any]:
        event = await trigger.run().asend(None)
        assert isinstance(event, TriggerEvent)
        return event.payload

    return await asyncio.wait_for(asyncio.gather(*(one(t) for t in triggers)), timeout)


def _trigger(session_id: int, **kwargs: Any) -> SessionHistoryTrigger:
    return SessionHistoryTrigger(
        bitrix24_conn_id="bitrix24_default", session_id=session_id, poll_interval=0.2, **kwargs
    )


def test_a_bad_answer_ends_only_the_waits_it_concerns(sandbox, webhook_conn, corrupt):
    corrupt({335: "superscript id", 351: "huge id", 357: "nested text", 365: "exploding"})
    after = sandbox.add_message(343, CLIENT, "anyone?")
    later: list[int] = []

    def answer_after_two_polls() -> None:
        deadline = time.monotonic() + 30
        while sandbox.stats()["requests"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        later.append(sandbox.add_message(343, OPERATOR, "Here I am"))

    threading.Thread(target=answer_after_two_polls, daemon=True).start()
    events = asyncio.run(
        _events(
            [
                _trigger(335),
                _trigger(351, text_pattern="(a+)+$"),
                _trigger(357),
                _trigger(365),
                _trigger(321, authors=["system"]),  # answered at once
                _trigger(343, after_message_id=after, authors=["operator"]),  # answered a few polls later
            ]
        )
    )
    superscript, huge, nested, exploding, at_once, waiting = events
    for event, where in ((superscript, 335), (huge, 351), (nested, 357)):
        assert event["status"] == "error"
        assert (event["code"], event["retryable"]) == ("INVALID_RESPONSE", False)
        assert event["method"] == "imopenlines.session.history.get"
        assert event["message"].startswith(f"INVALID_RESPONSE: the history of SESSION_ID={where} cannot be read: ")
    assert "message id '²' is not a plain integer" in superscript["message"]
    assert "message id 1000000000000000000000000000000 is out of range" in huge["message"]
    assert "is a list, not text" in nested["message"]
    assert exploding["status"] == "error"
    assert (exploding["code"], exploding["retryable"]) == ("INVALID_RESPONSE", True)
    assert "RuntimeError: the result cannot be read" in exploding["message"]
    assert at_once["status"] == "success"
    assert {m["author_type"] for m in at_once["messages"]} == {"system"}
    assert waiting["status"] == "success", waiting
    assert [m["id"] for m in waiting["messages"]] == later
    stats = sandbox.stats()
    assert stats["by_method"] == {"batch": stats["requests"]}
    assert stats["requests"] >= 2  # the wait that was not concerned kept polling after the bad answers
    assert _poller._pollers == {}


def test_a_bad_answer_fails_the_deferred_task_like_a_permanent_error(sandbox, webhook_conn, corrupt):
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_bitrix24.sensors.session_history import SessionHistorySensor

    corrupt({321: "superscript id"})
    (event,) = asyncio.run(_events([_trigger(321)]))
    sensor = SessionHistorySensor(task_id="wait", session_id=321, deferrable=True)
    with pytest.raises(AirflowFailException, match=r"^INVALID_RESPONSE: the history of SESSION_ID=321 cannot be read"):
        sensor.execute_complete(context={}, event=event)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [(r"(\w+) \1", r"invalid escape sequence: \\1"), (r"(?=.*refund)", r"invalid perl operator: \(\?=")],
)
def test_a_pattern_re2_refuses_ends_the_trigger_before_any_request(sandbox, webhook_conn, pattern, reason):
    (event,) = asyncio.run(_events([_trigger(335, text_pattern=pattern)]))
    assert event["status"] == "error"
    assert (event["code"], event["retryable"]) == ("INVALID_ARGUMENT", False)
    assert event["message"].startswith(f"text_pattern: {pattern!r} is not a valid regular expression in RE2 syntax")
    assert re.search(reason, event["message"])
    assert sandbox.stats()["requests"] == 0
