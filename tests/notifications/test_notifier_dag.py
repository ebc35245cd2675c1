"""
The notifier example DAG in real Airflow runs (``dag.test()``) against the sandbox: a task that fails and retries
posts exactly the expected messages into the chat, and a dead portal leaves every outcome as it was.
"""

from __future__ import annotations

import importlib.metadata
import json
import socket
from urllib.parse import quote, urlsplit

from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import run_dag, set_conn

DAG_ID = "example_bitrix24_notifier"
BASE_URL = "http://airflow.example:8080"
AIRFLOW_3 = int(importlib.metadata.version("apache-airflow").split(".")[0]) >= 3


def _new_messages(sandbox, before: int) -> list[str]:
    return [m["text"] for m in sandbox.chat_messages(SEED.group_chat_id)[before:]]


def _run_id() -> str:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == DAG_ID).order_by(DagRun.id.desc()).first()
        assert run is not None
        return str(run.run_id)


def _links(run_id: str, try_number: int) -> str:
    """The links the message must end with: to Airflow's own task-log URL (``ti.log_url``) and the run's page."""
    if AIRFLOW_3:
        run = f"{BASE_URL}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"
        log = f"{BASE_URL}/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/flaky?try_number={try_number}"
    else:  # Airflow 2's grid view; its log URL names the run and the task, not the try
        run = f"{BASE_URL}/dags/{DAG_ID}/grid?dag_run_id={quote(run_id, safe='')}"
        log = _airflow2_log_url(run_id)
    return f"[URL={log}]Task log[/URL] | [URL={run}]DAG run[/URL]"


def _airflow2_log_url(run_id: str) -> str:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=DAG_ID, run_id=run_id, task_id="flaky").one()
        return str(ti.log_url)


def test_a_retry_then_success_posts_the_retry_alert_and_the_dag_message(sandbox, webhook_conn, airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    monkeypatch.setenv("AIRFLOW__WEBSERVER__BASE_URL", BASE_URL)
    before = len(sandbox.chat_messages(SEED.group_chat_id))
    result = run_dag(DAG_ID)
    assert result.state == "success", result.tasks
    assert result.tasks["flaky"] == ("success", 2)
    run_id = _run_id()
    assert _new_messages(sandbox, before) == [
        f"[B]Retrying flaky[/B] of {DAG_ID} after try 1: flaky failed on try 1\n{_links(run_id, 1)}",
        f"[B]{DAG_ID}[/B] finished: run {run_id}\n{_links(run_id, 2)}",
    ]
    assert all(m["author_id"] == SEED.webhook_user_id for m in sandbox.chat_messages(SEED.group_chat_id)[before:])


def test_a_failing_task_posts_retry_failure_and_dag_alerts(sandbox, webhook_conn, airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    monkeypatch.setenv("AIRFLOW__WEBSERVER__BASE_URL", BASE_URL)
    before = len(sandbox.chat_messages(SEED.group_chat_id))
    result = run_dag(DAG_ID, run_conf={"fail": True})
    assert result.state == "failed"
    assert result.tasks["flaky"] == ("failed", 2)
    run_id = _run_id()
    retry, failure, dag_failed = _new_messages(sandbox, before)
    assert retry.startswith("[B]Retrying flaky[/B]")
    assert failure == (
        "[B]Airflow: Task failed[/B]\n"
        f"DAG [B]{DAG_ID}[/B], task [B]flaky[/B], run {run_id}, try 2\n"
        "Error: RuntimeError: flaky failed on try 2\n"
        f"{_links(run_id, 2)}"
    )
    assert dag_failed.startswith(f"[B]{DAG_ID}[/B] failed: run {run_id}\n")


def test_a_dead_portal_leaves_every_outcome_unchanged(sandbox, airflow_db, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = json.loads(sandbox.airflow_conn_json("webhook"))
    conn["host"] = conn["host"].replace(f":{urlsplit(sandbox.base_url).port}/", f":{port}/")
    set_conn(monkeypatch, "bitrix24_default", conn)
    ok = run_dag(DAG_ID)
    failed = run_dag(DAG_ID, run_conf={"fail": True})
    assert (ok.state, ok.tasks["flaky"]) == ("success", ("success", 2))
    assert (failed.state, failed.tasks["flaky"]) == ("failed", ("failed", 2))
    assert sandbox.stats()["requests"] == 0
