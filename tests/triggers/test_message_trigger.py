"""Bitrix24MessageTrigger against the sandbox: the 3.3 shared stream in ack mode, and the 3.0-3.2 run() path."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from airflow_provider_bitrix24.message_events import MessageEventsError
from airflow_provider_bitrix24.sandbox.state import SEED
from airflow_provider_bitrix24.triggers import messages
from airflow_provider_bitrix24.triggers.messages import CLASSPATH, Bitrix24MessageTrigger

CONN = "bitrix24_events"
CLIENT = 101
SUPPORT = SEED.support_latest_session_id  # chat 1763, line 1 (webhook user 1 is a member)
WHATSAPP_CHAT = SEED.whatsapp_chat_id  # chat 1815, line 2 (user 1 is a member); its session is closed
WEBHOOK_CODE = "sandbox-webhook-0000"
GET = "im.v2.event.get"


@pytest.fixture
def conn(sandbox, monkeypatch) -> str:
    extra = {"max_retries": 0}
    conn = {"conn_type": "bitrix24", "host": sandbox.webhook_url, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(conn))
    return CONN


def _sales_session(sandbox) -> int:
    return sandbox.open_session(WHATSAPP_CHAT)  # a live session on line 2, announced by a system message


def _trigger(**kwargs) -> Bitrix24MessageTrigger:
    kwargs.setdefault("bitrix24_conn_id", CONN)
    kwargs.setdefault("poll_interval", 0.05)
    return Bitrix24MessageTrigger(**kwargs)


async def _subscribed(sandbox) -> None:
    """Wait until the reader subscribed: the portal records nothing for a user before that."""
    await _until(lambda: 1 in sandbox.engine.state.events.subscribed)


def _gets(sandbox) -> int:
    return sandbox.stats()["by_method"].get(GET, 0)


def test_serialize_round_trips_with_the_conn_id_only():
    trigger = Bitrix24MessageTrigger(
        bitrix24_conn_id="bitrix24_default",
        chat_ids=[1763],
        line_ids=(1, 2),
        authors="client",
        text_pattern=r"(?i)order",
        event_types="ONIMV2MESSAGEADD",
        poll_interval=5,
    )
    path, kwargs = trigger.serialize()
    assert path == CLASSPATH
    assert kwargs == {
        "bitrix24_conn_id": "bitrix24_default",
        "chat_ids": [1763],
        "line_ids": [1, 2],
        "authors": ["client"],
        "text_pattern": "(?i)order",
        "event_types": ["ONIMV2MESSAGEADD"],
        "poll_interval": 5.0,
        "one_event_per_message": False,
    }
    assert Bitrix24MessageTrigger(**kwargs).serialize() == (path, kwargs)
    json.dumps(kwargs)
    if hasattr(Bitrix24MessageTrigger, "hash"):  # Airflow 3: the trigger row of an asset watcher
        assert Bitrix24MessageTrigger.hash(path, kwargs) == Bitrix24MessageTrigger.hash(*trigger.serialize())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bitrix24_conn_id": ""}, "bitrix24_conn_id"),
        ({"line_ids": [-1]}, "line_ids"),
        ({"chat_ids": ["abc"]}, "chat_ids"),
        ({"authors": ["nobody"]}, "author"),
        ({"event_types": ["MESSAGE"]}, "event_types"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"text_pattern": 5}, "text_pattern"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}: "):
        Bitrix24MessageTrigger(**{"bitrix24_conn_id": CONN, **kwargs})


def test_a_misspelt_argument_is_refused_by_name():
    with pytest.raises(TypeError, match="lines"):
        Bitrix24MessageTrigger(bitrix24_conn_id=CONN, lines=[1])


@pytest.mark.skipif(not messages.SHARED_STREAMS, reason="shared streams need Airflow 3.3")
def test_one_shared_stream_per_connection():
    a, b = _trigger(line_ids=[1]), _trigger(text_pattern="x", poll_interval=60)
    assert a.shared_stream_key() == b.shared_stream_key() == ("bitrix24.im.v2.Event", CONN)
    assert _trigger(bitrix24_conn_id="other").shared_stream_key() != a.shared_stream_key()


# --------------------------------------------------------------------------- Airflow 3.3 ack mode


needs_shared_streams = pytest.mark.skipif(
    not messages.SHARED_STREAMS, reason="shared streams with an ack channel need Airflow 3.3"
)


class Triggerer:
    """The part of the triggerer that drives shared streams: subscribe, filter, bind, persist, confirm."""

    def __init__(self, *, persist: bool = True, ack_timeout: float = 30.0) -> None:
        from airflow.triggers.shared_stream import SharedStreamManager

        self.manager = SharedStreamManager(ack_timeout=ack_timeout)
        self.persist = persist
        self.stored: list[tuple[int, dict]] = []
        self.errors: list[BaseException] = []
        self._unconfirmed: list[int] = []
        self._tasks: list[asyncio.Task] = []

    def start(self, triggers: list[Bitrix24MessageTrigger]) -> None:
        for trigger_id, trigger in enumerate(triggers, start=len(self._tasks) + 1):
            self._tasks.append(asyncio.create_task(self._run(trigger_id, trigger)))
        self._tasks.append(asyncio.create_task(self._supervisor()))

    async def _run(self, trigger_id: int, trigger: Bitrix24MessageTrigger) -> None:
        key = trigger.shared_stream_key()
        stream = self.manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=key)
        try:
            async for event in trigger.filter_shared_stream(stream):
                seq = self.manager.bind_pending_event(trigger_id=trigger_id, key=key)
                self.stored.append((trigger_id, event.payload))
                if seq is not None:
                    self._unconfirmed.append(seq)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.errors.append(exc)

    async def _supervisor(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            if self.persist and self._unconfirmed:
                seqs, self._unconfirmed = self._unconfirmed, []
                self.manager.confirm_persisted(seqs)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.manager.stop_all()

    def messages(self, trigger_id: int) -> list[int]:
        return [m["id"] for tid, payload in self.stored if tid == trigger_id for m in payload["messages"]]


async def _until(condition, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@needs_shared_streams
def test_ack_mode_fans_one_reader_out_to_every_watcher(sandbox, conn, logs):
    sales = _sales_session(sandbox)

    async def scenario():
        triggerer = Triggerer()
        watchers = [_trigger(), _trigger(line_ids=[2]), _trigger(text_pattern=r"(?i)refund")] + [
            _trigger() for _ in range(7)
        ]
        triggerer.start(watchers)
        await _subscribed(sandbox)
        support = [sandbox.add_message(SUPPORT, CLIENT, f"support {i}") for i in range(3)]
        refund = sandbox.add_message(sales, 104, "I want a refund")
        sandbox.add_message(SUPPORT, 1, "operator answer")  # not a client: nobody fires
        await _until(lambda: len(triggerer.messages(1)) == 4 and triggerer.messages(3))
        await _until(lambda: sandbox.engine.state.events.pending(1) == [])  # confirmed on the portal
        gets_before = _gets(sandbox)
        await asyncio.sleep(0.5)
        idle_gets = _gets(sandbox) - gets_before
        await triggerer.stop()
        return triggerer, support, refund, idle_gets

    triggerer, support, refund, idle_gets = asyncio.run(scenario())
    assert not triggerer.errors
    assert triggerer.messages(1) == [*support, refund]
    assert triggerer.messages(2) == [refund]
    assert triggerer.messages(3) == [refund]
    for trigger_id in range(4, 11):
        assert triggerer.messages(trigger_id) == [*support, refund]
    # One reader for ten watchers: about one get per 0.05 s interval, not ten.
    assert idle_gets <= 0.5 / 0.05 + 3
    payload = triggerer.stored[0][1]
    assert set(payload["messages"][0]) == {
        "id", "chat_id", "session_id", "author_id", "author_type", "date", "text", "event_id", "line_id", "event_type"
    }  # fmt: skip
    assert WEBHOOK_CODE not in json.dumps([p for _, p in triggerer.stored])
    assert "im.v2.Event.get" in logs()  # the client logged its calls...
    assert WEBHOOK_CODE not in logs()  # ...with the webhook code masked


@needs_shared_streams
def test_ack_mode_confirms_nothing_airflow_has_not_stored(sandbox, conn):
    async def scenario():
        crashed = Triggerer(persist=False)  # the supervisor never confirms: the triggerer dies before storing
        crashed.start([_trigger()])
        await _subscribed(sandbox)
        ids = [sandbox.add_message(SUPPORT, CLIENT, f"m{i}") for i in range(3)]
        await _until(lambda: crashed.messages(1) == ids)
        await asyncio.sleep(0.4)  # many intervals: still no confirmation may reach the portal
        pending = sandbox.engine.state.events.pending(1)
        await crashed.stop()
        restarted = Triggerer()
        restarted.start([_trigger()])
        await _until(lambda: restarted.messages(1) == ids)
        await _until(lambda: sandbox.engine.state.events.pending(1) == [])
        await restarted.stop()
        return ids, pending

    ids, pending = asyncio.run(scenario())
    assert len(pending) == len(ids)


@needs_shared_streams
def test_ack_mode_permanent_error_fails_every_watcher_without_events(sandbox, conn):
    sandbox.configure(im_events_available=False)

    async def scenario():
        triggerer = Triggerer()
        triggerer.start([_trigger(), _trigger(line_ids=[1])])
        await _until(lambda: len(triggerer.errors) == 2)
        await triggerer.stop()
        return triggerer

    triggerer = asyncio.run(scenario())
    assert not triggerer.stored
    for error in triggerer.errors:
        assert isinstance(error, MessageEventsError)
        assert "ERROR_METHOD_NOT_FOUND" in str(error)
        assert "SessionHistorySensor" in str(error)


@needs_shared_streams
def test_one_event_per_message_payload_is_the_record(sandbox, conn):
    async def scenario():
        triggerer = Triggerer()
        triggerer.start([_trigger(one_event_per_message=True)])
        await _subscribed(sandbox)
        ids = [sandbox.add_message(SUPPORT, CLIENT, f"m{i}") for i in range(2)]
        await _until(lambda: len(triggerer.stored) == 2)
        await triggerer.stop()
        return triggerer, ids

    triggerer, ids = asyncio.run(scenario())
    payloads = [p for _, p in triggerer.stored]
    assert [p["id"] for p in payloads] == ids
    assert payloads[0]["chat_id"] == SEED.support_chat_id
    assert payloads[0]["session_id"] == SUPPORT
    assert payloads[0]["line_id"] == 1
    assert payloads[0]["author_type"] == "client"


# --------------------------------------------------------------------------- Airflow 3.0-3.2: run()


def test_without_shared_streams_each_trigger_runs_on_its_own(monkeypatch):
    monkeypatch.setattr(messages, "SHARED_STREAMS", False)
    assert _trigger().shared_stream_key() is None


def test_run_shares_one_reader_and_fires_each_message_once(sandbox, conn):
    async def scenario():
        stored: dict[int, list] = {1: [], 2: []}

        async def consume(index, trigger):
            async for event in trigger.run():
                stored[index].append(event.payload)

        tasks = [
            asyncio.create_task(consume(1, _trigger())),
            asyncio.create_task(consume(2, _trigger(text_pattern=r"^urgent"))),
        ]
        await _subscribed(sandbox)
        ids = [sandbox.add_message(SUPPORT, CLIENT, text) for text in ("hello", "urgent: help", "thanks")]
        await _until(lambda: sum(len(p["messages"]) for p in stored[1]) == 3)
        await _until(lambda: sandbox.engine.state.events.pending(1) == [])
        before = _gets(sandbox)
        await asyncio.sleep(0.5)  # the condition stays true; nothing fires again
        idle = _gets(sandbox) - before
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)
        return stored, ids, idle

    stored, ids, idle = asyncio.run(scenario())
    assert [m["id"] for p in stored[1] for m in p["messages"]] == ids
    assert [m["id"] for p in stored[2] for m in p["messages"]] == [ids[1]]
    assert idle <= 0.5 / 0.05 + 3
    assert not messages._hubs


def test_run_raises_a_permanent_error(sandbox, monkeypatch):
    conn = {"conn_type": "bitrix24", "host": sandbox.limited_webhook_url, "extra": {"max_retries": 0}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(conn))

    async def scenario():
        with pytest.raises(MessageEventsError, match="add the 'im' scope"):
            async for _ in _trigger().run():
                pass

    asyncio.run(asyncio.wait_for(scenario(), 15))
