"""SessionHistoryToObjectStorageOperator against the sandbox, writing to file:// object storage in tmp_path."""

from __future__ import annotations

import json

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_bitrix24.sandbox.crm import GEN_EPOCH, last_updated
from airflow_provider_bitrix24.transfers import SessionHistoryToObjectStorageOperator
from airflow_provider_bitrix24.transfers import session_history as module

HISTORY = "imopenlines.session.history.get"
START, END = "2026-03-21T03:00:00+03:00", "2026-03-21T01:00:00+00:00"  # 00:00-01:00 UTC: sessions 0-59
STEM = "20260321T000000Z_20260321T010000Z"


def _generate(sandbox, sessions=80, messages=6):
    sandbox.configure(generated_sessions=sessions, generated_messages=messages)
    sandbox.reset(keep_config=True)


def _export(tmp_path, conn="bitrix24_default", **kwargs):
    op = SessionHistoryToObjectStorageOperator(
        task_id="export", path=f"file://{tmp_path}/out", start=START, end=END, bitrix24_conn_id=conn, **kwargs
    )
    return op.execute(context={})


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _expected(sandbox):
    """The sandbox's own sessions and messages of the window, from its state."""
    state = sandbox.engine.state
    low, high = GEN_EPOCH, GEN_EPOCH + 3600
    sessions = sorted((s for s in state.sessions.values() if low <= last_updated(state, s) < high), key=lambda s: s.id)
    messages = [(m.id, s.id, m.author_id, m.text) for s in sessions for m in (state.messages[i] for i in s.message_ids)]
    return sessions, messages


def test_the_export_equals_the_sandboxs_sessions_and_messages(sandbox, webhook_conn, tmp_path):
    _generate(sandbox)
    result = _export(tmp_path)
    sessions, messages = _expected(sandbox)
    assert len(sessions) == 60
    assert result["sessions"] == 60
    assert result["messages"] == 360
    rows = _lines(tmp_path / "out" / "sessions" / f"{STEM}.jsonl")
    state = sandbox.engine.state
    assert [r["id"] for r in rows] == [s.id for s in sessions]
    for row, session in zip(rows, sessions, strict=True):
        chat = state.chats[session.chat_id]
        assert row["chat_id"] == chat.id
        assert row["line_id"] == chat.line_id
        assert row["operator_id"] == session.operator_id
        assert row["client_id"] == 109
        assert row["user_code"] == chat.user_code
        assert row["message_count"] == len(session.message_ids)
        assert row["start"].endswith("+03:00")  # the portal's offset, kept
        assert (row["end"] is None) == (not session.closed)
    got = _lines(tmp_path / "out" / "messages" / f"{STEM}.jsonl")
    assert [(m["id"], m["session_id"], m["author_id"], m["text"]) for m in got] == messages
    assert set(got[0]) == {"id", "chat_id", "session_id", "author_id", "author_type", "date", "text"}
    assert {m["author_type"] for m in got} == {"client", "operator"}
    assert sandbox.stats()["by_method"].get(HISTORY, 0) == 0  # histories travel in batch, 50 a request


def test_a_rerun_gives_byte_identical_files(sandbox, webhook_conn, tmp_path):
    _generate(sandbox)
    _export(tmp_path)
    first = {p.name + p.parent.name: p.read_bytes() for p in (tmp_path / "out").rglob("*.jsonl")}
    _export(tmp_path)
    second = {p.name + p.parent.name: p.read_bytes() for p in (tmp_path / "out").rglob("*.jsonl")}
    assert first == second
    assert len(first) == 2
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(
        ["sessions", "messages", f"{STEM}.jsonl", f"{STEM}.jsonl"]
    )


def test_a_failure_midway_leaves_the_previous_files_and_no_partial_one(sandbox, webhook_conn, tmp_path, monkeypatch):
    _generate(sandbox)
    _export(tmp_path)
    before = {str(p): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    sandbox.add_message(sorted(_expected(sandbox)[0], key=lambda s: s.id)[0].id, 109, "one more")
    monkeypatch.setattr(module, "CHUNK", 20)
    flushes = []
    original = module.SessionHistoryToObjectStorageOperator._flush

    def flush(self, *args, **kwargs):
        flushes.append(1)
        if len(flushes) == 1:  # the first chunk is being written; the portal refuses a session of a later one
            sandbox.inject_fault(HISTORY, "error", count=1, error="ACCESS_DENIED", in_batch=True)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(module.SessionHistoryToObjectStorageOperator, "_flush", flush)
    with pytest.raises(AirflowFailException, match="ACCESS_DENIED"):
        _export(tmp_path)
    assert len(flushes) >= 2  # chunks were written to the temporary files before the failure
    after = {str(p): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before  # no temporary file left, the previous export untouched


def test_a_failure_on_the_first_run_leaves_no_file(sandbox, webhook_conn, tmp_path):
    _generate(sandbox)
    sandbox.inject_fault(HISTORY, "error", count=1, error="ACCESS_DENIED", in_batch=True)
    with pytest.raises(AirflowFailException, match="could not be read"):
        _export(tmp_path)
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_without_the_crm_scope_the_error_names_it(sandbox, tmp_path, monkeypatch):
    from tests.helpers import set_conn

    set_conn(monkeypatch, "b24_limited", json.loads(sandbox.airflow_conn_json("webhook")) | {})
    data = json.loads(sandbox.airflow_conn_json("webhook"))
    data["host"] = sandbox.limited_webhook_url
    data.pop("login", None)
    data.pop("password", None)
    set_conn(monkeypatch, "b24_limited", data)
    with pytest.raises(AirflowFailException, match="'crm' scope"):
        _export(tmp_path, conn="b24_limited")
    assert sandbox.stats()["requests"] == 1
    assert not (tmp_path / "out" / "sessions").exists() or not any((tmp_path / "out").rglob("*.jsonl"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start": "2026-03-21T00:00:00"}, "start: .* has no time zone"),
        ({"start": "yesterday"}, "start: .* is not an ISO 8601"),
        ({"end": "2026-03-20T00:00:00+00:00"}, "end: .* is not after start"),
        ({"format": "csv"}, "format"),
    ],
)
def test_bad_arguments_fail_naming_the_field(sandbox, webhook_conn, tmp_path, kwargs, field):
    op = SessionHistoryToObjectStorageOperator(
        task_id="export", path=f"file://{tmp_path}/out", **{"start": START, "end": END, **kwargs}
    )
    with pytest.raises(AirflowFailException, match=field):
        op.execute(context={})
    assert sandbox.stats()["requests"] == 0


def test_the_window_defaults_to_the_runs_data_interval(sandbox, webhook_conn, tmp_path):
    import pendulum

    _generate(sandbox)
    op = SessionHistoryToObjectStorageOperator(task_id="export", path=f"file://{tmp_path}/out")
    context = {
        "data_interval_start": pendulum.datetime(2026, 3, 21, 0, 0, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 3, 21, 1, 0, tz="UTC"),
    }
    assert op.execute(context=context)["sessions"] == 60


def test_parquet_matches_jsonl_and_reruns_identically(sandbox, webhook_conn, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")
    _generate(sandbox)
    _export(tmp_path)
    _export(tmp_path, format="parquet")
    jsonl = _lines(tmp_path / "out" / "messages" / f"{STEM}.jsonl")
    table = pq.read_table(tmp_path / "out" / "messages" / f"{STEM}.parquet").to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in jsonl]
    assert [r["date"].isoformat() for r in table][:1] == [
        pytest.importorskip("pendulum").parse(jsonl[0]["date"]).in_tz("UTC").isoformat()
    ]
    first = (tmp_path / "out" / "sessions" / f"{STEM}.parquet").read_bytes()
    _export(tmp_path, format="parquet")
    assert (tmp_path / "out" / "sessions" / f"{STEM}.parquet").read_bytes() == first


def test_the_outlet_is_the_path(tmp_path):
    op = SessionHistoryToObjectStorageOperator(task_id="export", path=f"file://{tmp_path}/out/")
    assert [o.uri for o in op.outlets] == [f"file://{tmp_path}/out"]
    templated = SessionHistoryToObjectStorageOperator(task_id="t", path="file:///{{ ds }}")
    assert templated.outlets == []


def test_the_next_chunk_is_read_while_the_one_before_is_written(sandbox, webhook_conn, tmp_path, monkeypatch):
    """The portal is not left idle between chunks, and the files still come out in the sessions' order."""
    import threading

    from airflow_provider_bitrix24 import sessions

    _generate(sandbox)
    _export(tmp_path)
    one_chunk = {str(p.relative_to(tmp_path)): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    monkeypatch.setattr(module, "CHUNK", 20)
    real = sessions.read_histories
    both_reading = threading.Barrier(2, timeout=10)
    overlapped = []

    def read(client, chunk):
        if not overlapped:  # the first two reads wait for each other: they must be under way at the same time
            try:
                both_reading.wait()
                overlapped.append(True)
            except threading.BrokenBarrierError:
                overlapped.append(False)
        return real(client, chunk)

    monkeypatch.setattr(sessions, "read_histories", read)
    _export(tmp_path)
    chunked = {str(p.relative_to(tmp_path)): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert overlapped[0] is True  # the second chunk was being read while the first was
    assert chunked == one_chunk  # the same bytes as in one chunk: written in the sessions' order
