"""SaveQuickAnswerOperator over real HTTP against the sandbox portal."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator
from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import set_conn

BULK = list(SEED.bulk_message_ids)
SAVE = "imopenlines.message.quick.save"


def _answers_per_message(sandbox) -> Counter:
    return Counter(a["message_id"] for a in sandbox.quick_answers())


def _run(**kwargs):
    op = SaveQuickAnswerOperator(task_id="save", **kwargs)
    return op.execute(context={})


def _fast_conn(monkeypatch, sandbox, **extra) -> str:
    data = json.loads(sandbox.airflow_conn_json("webhook"))
    data["extra"] = {**data.get("extra", {}), **extra}
    set_conn(monkeypatch, "b24_test", data)
    return "b24_test"


def test_one_message_is_one_call(sandbox, webhook_conn):
    before = len(sandbox.quick_answers())
    assert _run(chat_id=SEED.support_chat_id, message_id=str(SEED.new_text_message_id)) == [SEED.new_text_message_id]
    stats = sandbox.stats()
    assert stats["requests"] == 1
    assert stats["by_method"] == {"imopenlines.message.quick.save": 1}
    assert len(sandbox.quick_answers()) == before + 1


def test_thousand_messages_spread_over_the_burst_under_the_standard_limit(sandbox, webhook_conn):
    """1,000 saves are spread over the 50 requests the burst lets go at once: 20 saves each, no 503."""
    sandbox.configure(rate_limit_enabled=True, burst=50, per_second=2.0)
    ids = BULK[:1000]
    started = time.monotonic()
    saved = _run(chat_id=SEED.bulk_chat_id, message_id=ids)
    elapsed = time.monotonic() - started
    assert saved == ids
    stats = sandbox.stats()
    assert stats["requests"] == 50
    assert stats["errors"].get("QUERY_LIMIT_EXCEEDED", 0) == 0
    per_message = _answers_per_message(sandbox)
    assert all(per_message[m] == 1 for m in ids)
    print(f"\n1000 quick answers: {stats['requests']} requests, {elapsed:.2f} s wall")


def test_a_busy_bucket_keeps_the_requests_full(sandbox, webhook_conn):
    """With little room left in the portal's bucket, spreading would only wait for slots: 50 saves per request."""
    from airflow_provider_bitrix24.client import limits
    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

    sandbox.configure(rate_limit_enabled=True, burst=50, per_second=2.0)
    limiter = Bitrix24Hook().client.engine.limiter
    for _ in range(45):  # other work of this process took 45 of the 50 slots a moment ago
        limiter.acquire("profile")
    assert isinstance(limiter, limits.LocalLimiter)
    assert limiter.headroom() <= 5
    ids = BULK[:500]
    assert _run(chat_id=SEED.bulk_chat_id, message_id=ids) == ids
    assert sandbox.stats()["requests"] == 10


def test_duplicates_and_message_dicts_are_saved_once(sandbox, webhook_conn):
    items = [BULK[0], str(BULK[1]), {"id": BULK[0], "text": "x"}, BULK[2], float(BULK[1])]
    assert _run(chat_id=SEED.bulk_chat_id, message_id=items) == BULK[:3]
    assert sandbox.stats()["batch_commands"] == 3
    per_message = _answers_per_message(sandbox)
    assert [per_message[m] for m in BULK[:3]] == [1, 1, 1]


def test_templated_list_string_is_accepted(sandbox, webhook_conn):
    assert _run(chat_id=str(SEED.bulk_chat_id), message_id=f"[{BULK[5]}, {BULK[6]}]") == BULK[5:7]


def test_unsaveable_messages_do_not_stop_the_others(sandbox, webhook_conn):
    ids = [*BULK[:60], 999_999_001, *BULK[60:70], 999_999_002]
    with pytest.raises(AirflowFailException) as info:
        _run(chat_id=SEED.bulk_chat_id, message_id=ids)
    text = str(info.value)
    assert "Could not save 2 of 72 message(s)" in text
    assert "999999001: CANT_SAVE_QUICK_ANSWER" in text
    assert "999999002: CANT_SAVE_QUICK_ANSWER" in text
    assert "Hint:" in text
    per_message = _answers_per_message(sandbox)
    assert all(per_message[m] == 1 for m in BULK[:70])


@pytest.mark.parametrize(
    ("chat_id", "message_id", "code"),
    [
        (999_999, [BULK[0], BULK[1]], "CHAT_ID"),
        (SEED.group_chat_id, [SEED.group_message_id, BULK[1]], "CHAT_TYPE"),
        (SEED.restricted_chat_id, [SEED.restricted_message_id, BULK[0]], "ACCESS_DENIED"),
        (999_999, BULK[0], "CHAT_ID"),
    ],
)
def test_chat_level_errors_fail_at_once_with_code_and_hint(sandbox, webhook_conn, chat_id, message_id, code):
    with pytest.raises(AirflowFailException, match=rf"^{code}: .*Hint: "):
        _run(chat_id=chat_id, message_id=message_id)
    assert sandbox.stats()["requests"] == 1


def test_missing_scope_fails_at_once(sandbox, monkeypatch):
    set_conn(monkeypatch, "bitrix24_default", sandbox.airflow_conn_json("limited"))
    with pytest.raises(AirflowFailException, match=r"^insufficient_scope\b.*imopenlines"):
        _run(chat_id=SEED.bulk_chat_id, message_id=BULK[:3])
    assert sandbox.stats()["requests"] == 1


def test_faults_still_end_with_every_message_saved_exactly_once(sandbox, monkeypatch, fast_retries):
    """503s, a 500, a connection dropped after the portal saved, and a timeout: nothing lost, nothing doubled."""
    conn_id = _fast_conn(monkeypatch, sandbox, timeout=1.0, max_retries=8)
    # Concurrent saves of one message can both insert on the portal: the race is live during this test.
    sandbox.configure(quick_save_race=True, race_window=0.002)
    sandbox.inject_fault("batch", "error", count=3, error="QUERY_LIMIT_EXCEEDED", status=503)
    sandbox.inject_fault("batch", "error", count=1, error="INTERNAL_SERVER_ERROR", status=500)
    sandbox.inject_fault("batch", "drop_after", count=1)
    sandbox.inject_fault("batch", "slow", count=1, delay=2.0)
    ids = BULK[:300]
    assert _run(chat_id=SEED.bulk_chat_id, message_id=ids, bitrix24_conn_id=conn_id) == ids
    per_message = _answers_per_message(sandbox)
    assert {per_message[m] for m in ids} == {1}
    assert sandbox.stats()["errors"].get("QUERY_LIMIT_EXCEEDED") == 3


def test_transient_errors_beyond_the_budget_leave_it_to_airflow_retries(sandbox, monkeypatch):
    conn_id = _fast_conn(monkeypatch, sandbox, max_retries=0)
    sandbox.inject_fault("batch", "error", count=1, error="QUERY_LIMIT_EXCEEDED", status=503)
    ids = BULK[:120]
    with pytest.raises(AirflowException) as info:
        _run(chat_id=SEED.bulk_chat_id, message_id=ids, bitrix24_conn_id=conn_id)
    assert not isinstance(info.value, AirflowFailException)
    assert str(info.value).startswith("QUERY_LIMIT_EXCEEDED")
    # The next try (Airflow's retry) finishes the job; nothing ends up saved twice.
    assert _run(chat_id=SEED.bulk_chat_id, message_id=ids, bitrix24_conn_id=conn_id) == ids
    per_message = _answers_per_message(sandbox)
    assert {per_message[m] for m in ids} == {1}


def test_transient_errors_inside_a_batch_are_retried_per_command(sandbox, webhook_conn):
    sandbox.inject_fault(
        "imopenlines.message.quick.save", "error", count=5, error="INTERNAL_SERVER_ERROR", in_batch=True
    )
    ids = BULK[:80]
    assert _run(chat_id=SEED.bulk_chat_id, message_id=ids) == ids
    per_message = _answers_per_message(sandbox)
    assert {per_message[m] for m in ids} == {1}


def test_a_save_answered_false_is_a_failed_save_not_a_saved_one(sandbox, webhook_conn):
    message = SEED.new_text_message_id
    sandbox.inject_fault(
        "imopenlines.message.quick.save",
        "raw",
        status=200,
        body='{"result": false, "time": {"operating": 0}}',
        content_type="application/json",
    )
    with pytest.raises(AirflowFailException, match=rf"^Could not save message {message} of chat .*answered False"):
        _run(chat_id=SEED.support_chat_id, message_id=message)


def test_saves_answered_false_or_null_in_a_batch_fail_the_task_after_the_others(sandbox, webhook_conn):
    ids = BULK[:3]
    sections = {str(ids[0]): True, str(ids[1]): False, str(ids[2]): None}
    body = {
        "result": {"result": sections, "result_error": [], "result_total": [], "result_next": [], "result_time": []},
        "time": {"operating": 0},
    }
    sandbox.inject_fault("batch", "raw", status=200, body=json.dumps(body), content_type="application/json")
    with pytest.raises(AirflowFailException) as info:
        _run(chat_id=SEED.bulk_chat_id, message_id=ids)
    text = str(info.value)
    assert text.startswith(f"Could not save 2 of 3 message(s) of chat {SEED.bulk_chat_id} (the other 1 were saved)")
    assert f"{ids[1]}: answered False" in text
    assert f"{ids[2]}: answered None" in text


def test_transient_and_permanent_failures_together_leave_the_transient_ones_to_retries(sandbox, monkeypatch):
    """Mixed failures of one run: a retryable error naming both kinds; the retry saves the rest, then fails."""
    conn_id = _fast_conn(monkeypatch, sandbox, max_retries=0)
    sandbox.inject_fault(
        "imopenlines.message.quick.save", "error", count=3, error="INTERNAL_SERVER_ERROR", in_batch=True
    )
    ids = [*BULK[:40], 999_999_001]
    with pytest.raises(AirflowException) as info:
        _run(chat_id=SEED.bulk_chat_id, message_id=ids, bitrix24_conn_id=conn_id)
    assert not isinstance(info.value, AirflowFailException)  # Airflow retries it
    text = str(info.value)
    assert text.startswith(f"Could not save 4 of 41 message(s) of chat {SEED.bulk_chat_id} (37 were saved). ")
    assert text.count(": INTERNAL_SERVER_ERROR") == 3
    assert "Permanent (a retry fails again, naming them): 999999001: CANT_SAVE_QUICK_ANSWER." in text
    unsaved = [m for m in BULK[:40] if _answers_per_message(sandbox)[m] == 0]
    assert len(unsaved) == 3
    assert all(f"{m}: INTERNAL_SERVER_ERROR" in text for m in unsaved)
    # Airflow's retry: the transient ones are saved now, the permanent one fails the task for good.
    with pytest.raises(AirflowFailException) as again:
        _run(chat_id=SEED.bulk_chat_id, message_id=ids, bitrix24_conn_id=conn_id)
    assert str(again.value).startswith(f"Could not save 1 of 41 message(s) of chat {SEED.bulk_chat_id} (the other 40")
    per_message = _answers_per_message(sandbox)
    assert {per_message[m] for m in BULK[:40]} == {1}


def _peak_at_once(sandbox, gap: float = 0.15) -> int:
    """The most requests the portal received within ``gap`` seconds of each other (one wave sent at once)."""
    from airflow_provider_bitrix24.sandbox.stats import peak_in_window

    return peak_in_window([entry[0] for entry in sandbox.stats()["log"]], gap)


@pytest.mark.parametrize(("share", "at_most", "requests"), [(0.5, 25, 40), (0.2, 10, 40), (None, 50, 50)])
def test_max_burst_share_bounds_the_requests_a_bulk_save_has_at_once(sandbox, webhook_conn, share, at_most, requests):
    """
    2,000 saves on the standard plan (burst 50): each request takes 0.5 s at the portal, so the requests in flight
    together arrive together. With a share, at most that share of the burst goes at once; without one, the run may
    take the whole burst.
    """
    sandbox.configure(rate_limit_enabled=True, burst=50, per_second=2.0, processing_time={SAVE: 0.01})
    ids = BULK[:2000]
    assert _run(chat_id=SEED.bulk_chat_id, message_id=ids, max_burst_share=share) == ids
    stats = sandbox.stats()
    assert stats["requests"] == requests
    assert stats["errors"].get("QUERY_LIMIT_EXCEEDED", 0) == 0
    peak = _peak_at_once(sandbox)
    assert peak <= at_most
    if share is None:
        assert peak > 25  # the whole burst at once: the bound above is what the share changes
    per_message = _answers_per_message(sandbox)
    assert all(per_message[m] == 1 for m in ids)


@pytest.mark.parametrize("share", [0, -0.5, 1.5, "half", True, float("nan")])
def test_a_bad_max_burst_share_fails_before_any_request_naming_it(sandbox, webhook_conn, share):
    with pytest.raises(AirflowFailException, match=r"^max_burst_share: .* is not a share of the burst"):
        _run(chat_id=SEED.bulk_chat_id, message_id=BULK[:100], max_burst_share=share)
    assert sandbox.stats()["requests"] == 0
