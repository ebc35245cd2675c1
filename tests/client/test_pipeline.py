"""Pipelined batches against the sandbox portal: order, the stop on a chat-level error, and never twice in flight."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections import Counter

import pytest

from airflow_provider_bitrix24.client import (
    AsyncBitrix24Client,
    Bitrix24AuthError,
    Bitrix24BatchError,
    Bitrix24Client,
    Bitrix24TransportError,
    parse_connection,
)
from airflow_provider_bitrix24.client.pipeline import AdaptiveWindow, BatchRun, Progress
from airflow_provider_bitrix24.sandbox.state import SEED

SAVE = "imopenlines.message.quick.save"
BULK = list(SEED.bulk_message_ids)


def _client(sandbox, **extra) -> Bitrix24Client:
    return Bitrix24Client(parse_connection(host=sandbox.webhook_url, extra=extra))


def _chunks(ids) -> list[set[str]]:
    return [{str(m) for m in ids[i : i + 50]} for i in range(0, len(ids), 50)]


def _saves(ids, chat_id=SEED.bulk_chat_id):
    return {str(m): (SAVE, {"CHAT_ID": chat_id, "MESSAGE_ID": m}) for m in ids}


def test_results_come_back_in_input_order_while_later_requests_finish_first(sandbox):
    # The first request is the slowest: the other three have 4 s to be answered while it is held.
    sandbox.inject_fault("batch", "slow", count=1, delay=4.0)
    updates: list[Progress] = []
    ids = BULK[:200]
    with _client(sandbox) as client:
        items = client.batch(_saves(ids), on_progress=updates.append)
    assert [item.key for item in items] == [str(m) for m in ids]
    assert all(item.ok and item.result is True for item in items)
    # Pipelined: the three other requests were answered while the slow one (whichever the portal got first) was
    # still in flight.
    slow = {item.key for item in updates[-1].items}
    assert slow in _chunks(ids)
    assert not slow & {item.key for item in updates[0].items}
    assert [u.done for u in updates] == [50, 100, 150, 200]
    assert sandbox.stats()["by_method"] == {"batch": 4}


def test_a_chat_level_error_stops_sending_new_requests(sandbox):
    # Two requests may go at once; the third would have to wait for a slot, and the error arrives first.
    ids = BULK[:500]
    with _client(sandbox, rate_limit={"burst": 2, "per_second": 0.5}) as client:
        items = client.batch(_saves(ids, chat_id=999_999), stop_codes=frozenset({"CHAT_ID"}))
    assert sandbox.stats()["by_method"] == {"batch": 2}
    codes = Counter(item.error.code for item in items if item.error is not None)
    assert codes == {"CHAT_ID": 100, "NOT_EXECUTED": 400}
    unsent = items[-1].error
    assert unsent is not None
    assert "stopped after CHAT_ID" in str(unsent)


def test_thousand_saves_with_the_concurrent_insert_race_on_hold_exactly_one_answer_each(sandbox):
    """Two concurrent saves of one message can both insert; pipelining must never put one message in two requests."""
    sandbox.configure(quick_save_race=True, race_window=0.001)
    ids = BULK[:1000]
    with _client(sandbox) as client:
        items = client.batch(_saves(ids))
    assert [item.key for item in items] == [str(m) for m in ids]
    assert all(item.ok for item in items)
    per_message = Counter(a["message_id"] for a in sandbox.quick_answers())
    assert {per_message[m] for m in ids} == {1}
    assert sandbox.stats()["by_method"] == {"batch": 20}


def test_transient_command_errors_are_sent_again_only_after_their_request_ended(sandbox):
    sandbox.configure(quick_save_race=True, race_window=0.001)
    sandbox.inject_fault(SAVE, "error", count=30, error="INTERNAL_SERVER_ERROR", in_batch=True)
    ids = BULK[:300]
    with _client(sandbox) as client:
        items = client.batch(_saves(ids))
    assert all(item.ok for item in items)
    per_message = Counter(a["message_id"] for a in sandbox.quick_answers())
    assert {per_message[m] for m in ids} == {1}
    assert sandbox.stats()["by_method"]["batch"] == 7  # six requests, then one more for the 30 refused commands


def test_the_async_client_pipelines_the_same_way(sandbox):
    sandbox.inject_fault("batch", "slow", count=1, delay=4.0)
    ids = BULK[:150]

    async def main():
        updates: list[Progress] = []
        async with AsyncBitrix24Client(parse_connection(host=sandbox.webhook_url)) as client:
            items = await client.batch(_saves(ids), on_progress=updates.append)
        return items, updates

    items, updates = asyncio.run(main())
    assert [item.key for item in items] == [str(m) for m in ids]
    assert all(item.ok for item in items)
    slow = {item.key for item in updates[-1].items}
    assert slow in _chunks(ids)
    assert not slow & {item.key for item in updates[0].items}


def test_user_keys_reach_the_portal_so_references_between_commands_resolve(sandbox):
    commands = {
        "who": ("profile", None),
        "dialog": ("imopenlines.dialog.get", {"CHAT_ID": SEED.support_chat_id}),
        "again": ("imopenlines.dialog.get", {"CHAT_ID": "$result[dialog][id]"}),
    }
    with _client(sandbox) as client:
        who, dialog, again = client.batch(commands)
    assert (who.key, dialog.key, again.key) == ("who", "dialog", "again")
    assert again.ok, again.error
    assert again.result["id"] == dialog.result["id"] == SEED.support_chat_id


@pytest.mark.parametrize(("answers", "expected"), [([1.0] * 5, 9), ([1.0, 1.0, 4.0], 3), ([1.0] * 20, 16)])
def test_window_grows_while_the_portal_keeps_pace_and_halves_when_it_slows(answers, expected):
    clock = iter(range(1000))
    window = AdaptiveWindow(ceiling=16, initial=4, clock=lambda: float(next(clock)))
    for seconds in answers:
        window.on_answer(seconds, commands=50)
    # 4 + 1 per answer at the usual pace, up to the ceiling; a request 4x slower per command halves it instead.
    assert window.size == expected


def test_window_halves_once_per_burst_of_refusals():
    window = AdaptiveWindow(ceiling=32, initial=32, clock=lambda: 100.0)
    for _ in range(5):
        window.on_overload(seconds=1.0)
    assert window.size == 16
    assert window.shrinks == 1


def test_commands_blocked_inside_a_batch_are_sent_again_after_the_reset_not_before(sandbox):
    """
    Portals that bill the commands of a batch (2022-2023) refuse the commands over a method's operating budget in
    ``result_error``; the client sends them again after the method's reset, merged into full requests, and every
    message is saved once.
    """
    sandbox.configure(
        operating_limit=1.0,
        operating_window=4.0,
        operating_bucket=1.0,
        operating_cost={SAVE: 0.02},
        batch_billing="command",
        quick_save_race=True,
        race_window=0.001,
    )
    ids = BULK[:150]
    with _client(sandbox) as client:
        items = client.batch(_saves(ids))
    assert all(item.ok for item in items), [i.error for i in items if i.error][:3]
    per_message = Counter(a["message_id"] for a in sandbox.quick_answers())
    assert {per_message[m] for m in ids} == {1}
    stats = sandbox.stats()
    assert stats["batch_errors"].get("OPERATION_TIME_LIMIT", 0) >= 50  # the block really happened
    # About 50 commands fit each window: 3 requests, then 2 with the 100 refused, then 1 with the last 50.
    assert stats["by_method"]["batch"] <= 6


def test_a_batch_refused_for_its_budget_waits_for_the_reset_the_answers_announced(sandbox, monkeypatch):
    """
    Portals that bill a batch as ``batch`` (2026) refuse the next batch with 429 and no time block; the earlier
    answers announced the method's reset, so the client waits exactly for it (not a guessed 10 s) and finishes.
    """
    from airflow_provider_bitrix24.client import core

    # The guess for an unknown reset, made long here: a client that guessed would take 30 s or more.
    monkeypatch.setattr(core, "UNKNOWN_BLOCK", 30.0)
    sandbox.configure(operating_limit=1.0, operating_window=3.0, operating_bucket=1.0, operating_cost={"batch": 0.6})
    started = time.monotonic()
    with _client(sandbox) as client:
        items = client.batch(_saves(BULK[:150]))  # three batches at once: 1.8 s of a 1.0 s budget
    elapsed = time.monotonic() - started
    assert all(item.ok for item in items)
    stats = sandbox.stats()
    refused = stats["errors"].get("OPERATION_TIME_LIMIT", 0)
    # The requests that arrived after the crossing one finished are refused (the portal checks before a call) ...
    assert refused in (1, 2), stats
    assert stats["by_method"]["batch"] == 3 + refused  # ... and sent once more after the reset, not hammered
    assert elapsed < 20.0  # the announced reset (within 4 s), not the 30 s kept for an unknown one


def test_a_full_window_waits_for_an_answer_instead_of_polling(sandbox, monkeypatch):
    """While every place of the window is taken, only an answer can let the next request go: no busy loop."""
    sandbox.inject_fault("batch", "slow", count=4, delay=0.5)
    calls = Counter[str]()
    original = BatchRun.wake_in

    def counted(self: BatchRun) -> float | None:
        calls["wake_in"] += 1
        return original(self)

    monkeypatch.setattr(BatchRun, "wake_in", counted)
    ids = BULK[:400]
    with _client(sandbox, rate_limit={"burst": 2, "per_second": 1000}) as client:
        items = client.batch(_saves(ids))
    assert all(item.ok for item in items)
    # Eight requests, two at a time: one wait per answer, not one per turn of a loop.
    assert calls["wake_in"] <= 2 * 8, calls


def test_wake_in_is_none_while_the_window_is_full(sandbox):
    with _client(sandbox) as client:
        run = BatchRun(client.engine, list(_saves(BULK[:200]).values()), window=AdaptiveWindow(ceiling=2))
        assert run.next_job() is not None
        assert run.wake_in() == 0.0  # a place is free and requests are ready
        assert run.next_job() is not None
        assert run.next_job() is None
        assert run.wake_in() is None


def test_a_spread_run_takes_an_equal_share_of_the_window_per_request(sandbox):
    """1,000 saves over a window of 50: 50 requests of 20, each message in exactly one, results in input order."""
    sandbox.configure(quick_save_race=True, race_window=0.001)
    updates: list[Progress] = []
    ids = BULK[:1000]
    with _client(sandbox) as client:
        items = client.batch(_saves(ids), on_progress=updates.append, spread=True)
    assert [item.key for item in items] == [str(m) for m in ids]
    assert all(item.ok and item.result is True for item in items)
    assert sandbox.stats()["by_method"] == {"batch": 50}
    assert sorted(len(u.items) for u in updates) == [20] * 50
    sent = [item.key for u in updates for item in u.items]
    assert sorted(sent) == sorted(str(m) for m in ids)  # no message in two requests
    per_message = Counter(a["message_id"] for a in sandbox.quick_answers())
    assert {per_message[m] for m in ids} == {1}


@pytest.mark.parametrize(
    ("count", "burst", "per_second", "expected"),
    [
        (1000, 5, 1000, [50] * 20),  # beyond what the window holds: full batches, the bucket sets the pace
        (120, 50, 1000, [10] * 12),  # never fewer than ten commands per request
        (2000, 50, 2, [40] * 50),  # the standard plan: all 50 requests fit in its bucket at once
        (2000, 50, 1000, [50] * 40),  # so fast a drain that half the bucket is kept for late requests
    ],
)
def test_a_spread_run_keeps_requests_full_when_the_window_is_small(sandbox, count, burst, per_second, expected):
    updates: list[Progress] = []
    with _client(sandbox, rate_limit={"burst": burst, "per_second": per_second}) as client:
        items = client.batch(_saves(BULK[:count]), on_progress=updates.append, spread=True)
    assert all(item.ok for item in items)
    assert sorted((len(u.items) for u in updates), reverse=True) == expected


def test_a_spread_run_keeps_commands_that_refer_to_each_other_in_requests_of_fifty(sandbox):
    commands = {
        "dialog": ("imopenlines.dialog.get", {"CHAT_ID": SEED.support_chat_id}),
        "again": ("imopenlines.dialog.get", {"CHAT_ID": "$result[dialog][id]"}),
        **_saves(BULK[:98]),
    }
    with _client(sandbox) as client:
        items = client.batch(commands, spread=True)
    assert all(item.ok for item in items), [i.error for i in items if i.error][:3]
    assert items[1].result["id"] == SEED.support_chat_id
    assert sandbox.stats()["by_method"] == {"batch": 2}


def test_the_async_client_spreads_the_same_way(sandbox):
    ids = BULK[:500]

    async def main():
        async with AsyncBitrix24Client(parse_connection(host=sandbox.webhook_url)) as client:
            return await client.batch(_saves(ids), spread=True)

    items = asyncio.run(main())
    assert [item.key for item in items] == [str(m) for m in ids]
    assert all(item.ok for item in items)
    assert sandbox.stats()["by_method"] == {"batch": 50}  # 500 over a window of 50: ten per request


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_operating_budget_lets_a_burst_go_then_paces_to_what_the_portal_keeps_accepting():
    from airflow_provider_bitrix24.client.limits import ProcessingBudget

    clock = _Clock()
    budget = ProcessingBudget(limit=480.0, window=600.0, share=0.8, clock=clock)
    assert budget.reserve(50) == (0.0, 0.0)  # nothing known yet: the first requests are not held
    budget.settle(0.0, 50 * 0.068, 50)  # the portal said: 0.068 s per history call
    assert budget.per_command == pytest.approx(0.068)
    waits = []
    for _ in range(120):  # 6,000 more commands at once: 408 s of execution
        booked, wait = budget.reserve(50)
        assert booked == pytest.approx(3.4)
        waits.append(wait)
    # 0.8 x 480 = 384 s go at once; beyond that, at 0.64 s of execution per second (0.8 x 480 / 600).
    first_wait = next(i for i, w in enumerate(waits) if w > 0)
    assert first_wait == 111  # the 113th booking of 3.4 s (with the first one) is the first past 384 s
    assert waits[-1] == pytest.approx((3.4 + 120 * 3.4 - 384) / 0.64)
    clock.now += 600
    assert budget.reserve(50)[1] == 0.0  # refilled


def test_a_batch_run_waits_when_the_operating_budget_says_so(sandbox, monkeypatch):
    from airflow_provider_bitrix24.client import pipeline
    from airflow_provider_bitrix24.client.core import Sleep
    from airflow_provider_bitrix24.client.limits import ProcessingBudget

    spent = ProcessingBudget(limit=1.0, window=10.0, share=1.0, clock=_Clock())  # no refill while the test runs
    spent.settle(0.0, 1.0, 10)  # 0.1 s per save learnt, and the whole budget spent just now
    monkeypatch.setattr(pipeline, "shared_budget", lambda config, method: spent)
    with _client(sandbox) as client:
        run = pipeline.BatchRun(client.engine, _saves(BULK[:20]))
        job = run.next_job()
        assert job is not None
        assert job.booked == pytest.approx(2.0)
        assert job.wait == pytest.approx(20.0)  # 2 s of work at 0.1 s per second of refill
        first = next(run.job_flow(job))
        assert isinstance(first, Sleep)
        assert first.seconds == job.wait


@pytest.mark.parametrize(
    ("fault", "options", "cause", "second"),
    [
        # The portal ran the second request, but its answer never came: those saves may have been done.
        ("drop_after", {}, Bitrix24TransportError, "unknown"),
        # The portal refused the second request before running it.
        ("error", {"error": "INVALID_CREDENTIALS"}, Bitrix24AuthError, "failed"),
    ],
)
def test_a_request_failing_for_good_gives_every_commands_outcome(sandbox, fault, options, cause, second):
    ids = BULK[:200]
    sandbox.inject_fault("batch", "slow", count=1, delay=0.01)  # the first request is answered
    sandbox.inject_fault("batch", fault, count=1, **options)  # the second one fails for good
    with (
        _client(sandbox, max_retries=0, rate_limit={"burst": 1, "per_second": 20}) as client,
        pytest.raises(Bitrix24BatchError) as info,
    ):
        client.batch(_saves(ids))
    err = info.value
    assert isinstance(err, cause)  # existing `except` clauses still catch it
    keys = [str(m) for m in ids]
    assert err.done == keys[:50]
    assert getattr(err, second) == keys[50:100]
    assert err.not_sent == keys[100:]
    assert [item.key for item in err.items] == keys
    assert all(item.result is True for item in err.items[:50])
    assert {item.error.code for item in err.items[100:]} == {"NOT_EXECUTED"}
    assert str(err).startswith(f"{err.code}: ")
    assert f"200 command(s): 50 done, {50 if second == 'failed' else 0} failed" in str(err)
    assert "sandbox-webhook" not in str(err)
    assert "sandbox-webhook" not in repr(err)
    saved = {a["message_id"] for a in sandbox.quick_answers()} & set(ids)
    assert saved == set(ids[:100] if second == "unknown" else ids[:50])
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, cause)
    assert isinstance(again, Bitrix24BatchError)
    assert (again.outcomes, str(again), again.code) == (err.outcomes, str(err), err.code)


def test_batch_options_travel_whole_and_the_old_keywords_still_work(sandbox):
    from airflow_provider_bitrix24.client import BatchOptions
    from airflow_provider_bitrix24.client.pipeline import batch_options

    with _client(sandbox) as client:
        assert BatchRun(client.engine, _saves(BULK[:200]), BatchOptions(max_burst_share=0.2)).window.ceiling == 10
        assert BatchRun(client.engine, _saves(BULK[:200])).window.ceiling == 50
        assert BatchRun(client.engine, _saves(BULK[:200]), halt=True).window.ceiling == 1
        spread = BatchRun(client.engine, _saves(BULK[:1000]), BatchOptions(spread=True, max_burst_share=0.5))
        assert spread.chunk == 40  # 1,000 over the 25 requests half the burst lets go at once
    merged = batch_options(BatchOptions(max_burst_share=0.5), spread=True, halt=False)
    assert (merged.spread, merged.max_burst_share, merged.halt) == (True, 0.5, False)
    for bad in (0, 1.01, True, "0.5"):
        with pytest.raises(ValueError, match=r"^max_burst_share: "):
            BatchOptions(max_burst_share=bad)


def test_the_async_client_takes_the_same_options(sandbox):
    from airflow_provider_bitrix24.client import BatchOptions

    async def main():
        async with AsyncBitrix24Client(parse_connection(host=sandbox.webhook_url)) as client:
            return await client.batch(_saves(BULK[:1000]), options=BatchOptions(spread=True, max_burst_share=0.5))

    items = asyncio.run(main())
    assert all(item.ok for item in items)
    assert sandbox.stats()["by_method"] == {"batch": 25}
