"""The session-export example DAG, run with ``dag.test()`` against the sandbox and a local folder."""

from __future__ import annotations

import json

import pendulum

from tests.conftest import run_dag

DAG_ID = "example_bitrix24_session_export"


def test_daily_export_then_quick_answers(sandbox, webhook_conn, airflow_db, tmp_path, monkeypatch):
    sandbox.configure(generated_sessions=30, generated_messages=6)
    sandbox.reset(keep_config=True)
    monkeypatch.setenv("BITRIX24_EXPORT_PATH", f"file://{tmp_path}/export")
    answers_before = len(sandbox.quick_answers())
    try:
        result = run_dag(DAG_ID, logical_date=pendulum.datetime(2026, 3, 22, tz="UTC"))
    except TypeError:  # Airflow 2
        result = run_dag(DAG_ID, execution_date=pendulum.datetime(2026, 3, 22, tz="UTC"))
    assert result.state == "success", result.tasks
    exported = result.xcoms["export_sessions"]
    assert exported["sessions"] == 30
    assert exported["messages"] == 180
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "export").rglob("*.jsonl"))
    assert files == [
        "export/messages/20260321T000000Z_20260322T000000Z.jsonl",
        "export/sessions/20260321T000000Z_20260322T000000Z.jsonl",
    ]
    lines = (tmp_path / "export" / "messages" / "20260321T000000Z_20260322T000000Z.jsonl").read_text().splitlines()
    assert len(lines) == 180
    assert json.loads(lines[0])["date"].endswith("+03:00")
    # Two operator texts match the default pattern: each is saved once, as a new quick answer.
    added = [a for a in sandbox.quick_answers()][answers_before:]
    assert sorted(a["text"] for a in added) == [
        "Please send us the order number.",
        "Your order has been shipped and arrives in 2-3 days.",
    ]
