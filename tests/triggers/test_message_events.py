"""Records, filters and the event-queue reader of ``im.v2.Event.*`` (plain Python, against the sandbox)."""

from __future__ import annotations

import asyncio
import copy
import json
import logging

import pytest

from airflow_provider_bitrix24.history import HistoryArgumentError
from airflow_provider_bitrix24.message_events import (
    EventReader,
    MessageEventsError,
    MessageFilter,
    by_chat,
    messages_of,
    open_line_of,
    to_record,
)
from airflow_provider_bitrix24.sandbox.state import SEED

CLIENT = 101
SESSION = SEED.support_latest_session_id  # chat 1763, line 1; the webhook user 1 is a member
WEBHOOK_CODE = "sandbox-webhook-0000"

#: The documented example of an ONIMV2MESSAGEADD event (events.md), in a group chat: not an open line.
DOCUMENTED = {
    "eventId": 2001,
    "type": "ONIMV2MESSAGEADD",
    "date": "2025-01-15T10:30:00+02:00",
    "data": {
        "message": {"id": 5012, "chatId": 5, "authorId": 1, "date": "2025-01-15T10:30:00+02:00",
                    "text": "Hello everyone!", "isSystem": False, "uuid": "", "forward": None, "params": {},
                    "viewedByOthers": False},
        "chat": {"id": 5, "dialogId": "chat5", "name": "Project Chat", "type": "chat", "messageType": "C",
                 "entityType": "", "entityId": "", "entityData1": "", "entityData2": "", "entityData3": ""},
        "user": {"id": 1, "bot": False, "connector": False, "externalAuthId": "default", "type": "employee"},
        "language": "en",
    },
}  # fmt: skip


def _line_event(**chat) -> dict:
    event = copy.deepcopy(DOCUMENTED)
    event["data"]["chat"].update(
        {"entityType": "LINES", "entityId": "telegrambot|2|209607941|744", "entityData1": "Y|LEAD|5|N|N|77|0|2|0|0"}
    )
    event["data"]["chat"].update(chat)
    event["data"]["user"].update({"id": 744, "connector": True})
    event["data"]["message"]["authorId"] = 744
    return event


def test_a_group_chat_is_not_an_open_line():
    assert to_record(DOCUMENTED) is None


def test_record_of_an_open_line_message_has_the_sensor_keys():
    record = to_record(_line_event())
    assert record == {
        "id": 5012,
        "chat_id": 5,
        "session_id": 77,
        "author_id": 744,
        "author_type": "client",
        "date": "2025-01-15T10:30:00+02:00",
        "text": "Hello everyone!",
        "event_id": 2001,
        "line_id": 2,
        "event_type": "ONIMV2MESSAGEADD",
    }
    json.dumps(record)


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        ({"entityType": "LINES", "entityId": "livechat|1|10|20", "entityData1": ""}, (1, None)),
        ({"entityType": "lines", "entityId": "", "entityData1": "N|NONE|0|N|N|0|0|3|0|0"}, (3, None)),
        ({"entityType": None, "type": "lines", "entityId": "x|4|1|1"}, (4, None)),
        ({"entityType": "LIVECHAT", "type": "lines"}, None),
        ({"type": "chat"}, None),
        ("chat5", None),
    ],
)
def test_open_lines_are_read_defensively(chat, expected):
    assert open_line_of(chat) == expected


@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: e.pop("data"),
        lambda e: e.update(eventId="x"),
        lambda e: e["data"].update(message="text"),
        lambda e: e["data"]["message"].update(id=None),
        lambda e: e.update(type="ONIMV2JOINCHAT"),
    ],
)
def test_unreadable_events_are_skipped_not_errors(mangle):
    event = _line_event()
    mangle(event)
    assert to_record(event) is None


def test_delete_event_carries_the_message_id_only():
    event = _line_event()
    event["type"] = "ONIMV2MESSAGEDELETE"
    event["data"]["messageId"] = event["data"].pop("message")["id"]
    record = to_record(event)
    assert record is not None
    assert (record["id"], record["text"], record["author_id"]) == (5012, "", 744)


def test_filter_defaults_to_new_client_messages():
    flt = MessageFilter.build()
    client = to_record(_line_event())
    operator = dict(client, author_type="operator")
    edited = dict(client, event_type="ONIMV2MESSAGEUPDATE")
    assert [flt.accepts(r) for r in (client, operator, edited)] == [True, False, False]


def test_filter_by_chat_line_author_pattern_and_type():
    record = to_record(_line_event())
    assert MessageFilter.build(line_ids=[2]).accepts(record)
    assert not MessageFilter.build(line_ids=[1]).accepts(record)
    assert MessageFilter.build(chat_ids=[5, 6]).accepts(record)
    assert not MessageFilter.build(chat_ids=[6]).accepts(record)
    assert MessageFilter.build(text_pattern=r"(?i)hello\s+every").accepts(record)
    assert not MessageFilter.build(text_pattern=r"^bye").accepts(record)
    assert MessageFilter.build(authors="any", event_types=["ONIMV2MESSAGEUPDATE", "ONIMV2MESSAGEADD"]).accepts(
        dict(record, event_type="ONIMV2MESSAGEUPDATE", author_type="bot")
    )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"chat_ids": [0]}, "chat_ids"),
        ({"line_ids": ["x"]}, "line_ids"),
        ({"line_ids": []}, "line_ids"),
        ({"authors": ["customer"]}, "author"),
        ({"text_pattern": r"(a)\1"}, "text_pattern"),
        ({"event_types": ["ONIMV2JOINCHAT"]}, "event_types"),
    ],
)
def test_bad_filter_arguments_name_the_field(kwargs, name):
    with pytest.raises(HistoryArgumentError, match=rf"^{name}: "):
        MessageFilter.build(**kwargs)


# --------------------------------------------------------------------------- reader against the sandbox


def _factory(monkeypatch, sandbox, conn_id: str = "bitrix24_events", url: str | None = None, **extra):
    conn = {"conn_type": "bitrix24", "host": url or sandbox.webhook_url, "extra": {"max_retries": 0, **extra}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))

    async def build():
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        return await Bitrix24Hook(bitrix24_conn_id=conn_id).get_async_client()

    return build


def _reader(monkeypatch, sandbox, **kwargs) -> EventReader:
    url = kwargs.pop("url", None)
    return EventReader("bitrix24_events", _factory(monkeypatch, sandbox, url=url), poll_interval=0.02, **kwargs)


def _ids(batch) -> list[int]:
    return [e["data"]["message"]["id"] for e in batch.events]


def test_reader_confirms_only_what_the_caller_confirmed(sandbox, monkeypatch):
    async def scenario():
        reader = _reader(monkeypatch, sandbox, limit=2)
        try:
            assert (await reader.poll()).events == []  # subscribes on first use
            ids = [sandbox.add_message(SESSION, CLIENT, f"m{i}") for i in range(3)]
            first = await reader.poll()
            assert _ids(first) == ids[:2]
            assert first.has_more
            again = await reader.poll()  # not confirmed: the same events again
            assert _ids(again) == ids[:2]
            reader.confirm(again)
            rest = await reader.poll()
            assert _ids(rest) == ids[2:]
            # The confirmation of the first two went with the last call; the third is still on the portal.
            assert sandbox.engine.state.events.pending(1) == [e["eventId"] for e in rest.events]
            return ids
        finally:
            await reader.aclose()

    asyncio.run(scenario())


def test_a_new_reader_gets_what_was_never_confirmed(sandbox, monkeypatch):
    async def scenario():
        first = _reader(monkeypatch, sandbox)
        await first.poll()
        ids = [sandbox.add_message(SESSION, CLIENT, f"m{i}") for i in range(2)]
        batch = await first.poll()
        first.confirm(batch)  # confirmed locally, never sent: the reader "dies" here
        await first.aclose()
        second = _reader(monkeypatch, sandbox)
        try:
            assert _ids(await second.poll()) == ids
        finally:
            await second.aclose()

    asyncio.run(scenario())


def test_transient_errors_keep_the_offset_and_back_off(sandbox, monkeypatch, caplog):
    async def scenario():
        reader = _reader(monkeypatch, sandbox)
        try:
            await reader.poll()
            ids = [sandbox.add_message(SESSION, CLIENT, "x")]
            reader.confirm(await reader.poll())
            new = sandbox.add_message(SESSION, CLIENT, "y")
            sandbox.inject_fault("im.v2.Event.get", "error", count=3, error="INTERNAL_SERVER_ERROR", status=500)
            batch = await reader.poll()
            assert _ids(batch) == [new]
            return ids
        finally:
            await reader.aclose()

    caplog.set_level(logging.WARNING)
    asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "transient failure" in r.getMessage()]
    assert len(warnings) == 3
    assert "from offset" in warnings[0]


@pytest.mark.parametrize(
    ("setup", "code", "fix"),
    [
        (lambda s: {"url": s.limited_webhook_url}, "insufficient_scope", "add the 'im' scope"),
        (lambda s: s.configure(im_events_available=False), "ERROR_METHOD_NOT_FOUND", "SessionHistorySensor"),
        (
            lambda s: {"url": s.webhook_url.replace(WEBHOOK_CODE, "wrong-code-0000")},
            "INVALID_CREDENTIALS",
            "update the Airflow connection",
        ),
    ],
)
def test_permanent_errors_fail_at_once_naming_the_fix(sandbox, monkeypatch, setup, code, fix):
    options = setup(sandbox) or {}

    async def scenario():
        reader = _reader(monkeypatch, sandbox, **options)
        try:
            with pytest.raises(MessageEventsError) as info:
                await asyncio.wait_for(reader.poll(), 10)
            return str(info.value), reader.requests
        finally:
            await reader.aclose()

    text, requests = asyncio.run(scenario())
    assert code in text
    assert fix in text
    assert requests == 1  # no retries of a permanent error
    assert WEBHOOK_CODE not in text
    assert "wrong-code-0000" not in text


def test_warns_when_another_reader_takes_events(sandbox, monkeypatch, caplog):
    async def scenario():
        ours = _reader(monkeypatch, sandbox)
        other = _reader(monkeypatch, sandbox)
        try:
            await ours.poll()
            await other.poll()
            sandbox.add_message(SESSION, CLIENT, "first")
            seen = await ours.poll()
            assert len(seen.events) == 1
            other.confirm(await other.poll())
            sandbox.add_message(SESSION, CLIENT, "second")
            await other.poll()  # sends its offset: "first" is deleted before we confirmed it
            await ours.poll()  # same offset as before: "first" is gone, "second" is there
        finally:
            await ours.aclose()
            await other.aclose()

    caplog.set_level(logging.WARNING)
    asyncio.run(scenario())
    assert any("Another application" in r.getMessage() for r in caplog.records)


def test_warns_when_the_queue_was_not_read_longer_than_its_retention(sandbox, monkeypatch, caplog):
    now = [1000.0]

    async def scenario():
        reader = _reader(monkeypatch, sandbox, clock=lambda: now[0])
        try:
            await reader.poll()
            now[0] += 3600
            await reader.poll()
            assert not caplog.records
            now[0] += 25 * 3600
            await reader.poll()
        finally:
            await reader.aclose()

    caplog.set_level(logging.WARNING)
    asyncio.run(scenario())
    assert any("longer than the portal keeps events" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- in the DAG


class _AssetEvent:
    def __init__(self, payload):
        self.extra = {"from_trigger": True, "payload": payload}


def test_messages_of_flattens_batches_and_drops_redeliveries():
    first = to_record(_line_event())
    second = dict(first, id=5013, event_id=2002)
    events = [
        _AssetEvent({"messages": [first, second]}),
        _AssetEvent({"messages": [first]}),  # handed out again after a restart
        _AssetEvent(dict(second, id=5011)),  # one_event_per_message payload
        _AssetEvent("not a payload"),
    ]
    assert [r["id"] for r in messages_of(events)] == [5011, 5012, 5013]
    grouped = by_chat(messages_of(events))
    assert [g["chat_id"] for g in grouped] == [5]
    assert [r["id"] for r in grouped[0]["message_id"]] == [5011, 5012, 5013]


def test_payload_records_are_what_save_quick_answer_takes(sandbox, monkeypatch):
    from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator

    async def read():
        reader = _reader(monkeypatch, sandbox)
        try:
            await reader.poll()
            sandbox.add_message(SESSION, CLIENT, "How do I reset my password?")
            return await reader.poll()
        finally:
            await reader.aclose()

    batch = asyncio.run(read())
    records = MessageFilter.build().match(batch.events)
    (keywords,) = by_chat(messages_of([{"messages": records}]))
    operator = SaveQuickAnswerOperator(task_id="save", bitrix24_conn_id="bitrix24_events", **keywords)
    assert operator.execute({}) == [records[0]["id"]]
    assert records[0]["id"] in [a["message_id"] for a in sandbox.quick_answers()]
