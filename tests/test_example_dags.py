"""The example DAGs parse offline and run end to end against the sandbox portal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import DAGS_FOLDER, ROOT, load_dag, run_dag, set_conn

EXAMPLES = sorted(p.stem for p in (ROOT / "example_dags").glob("*.py"))
SECRETS = ("sandbox-webhook-0000",)


def test_every_example_dag_parses_without_import_errors():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        from airflow.models.dagbag import DagBag
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    files = {Path(dag.fileloc).stem for dag in bag.dags.values()}
    assert set(EXAMPLES) <= files


def test_hook_example_dag(sandbox, webhook_conn, airflow_db):
    result = run_dag("example_bitrix24_hook")
    assert result.state == "success", result.tasks
    summary = result.xcoms["latest_session"]
    assert summary["chat_id"] == SEED.support_chat_id
    assert summary["session_id"] == SEED.support_latest_session_id
    assert summary["messages"] > 0
    assert not any(secret in repr(result.xcoms) for secret in SECRETS)


def test_quick_answer_example_dags(sandbox, webhook_conn, airflow_db):
    one = run_dag("example_bitrix24_quick_answer")
    many = run_dag("example_bitrix24_quick_answer_list")
    assert one.state == many.state == "success", (one.tasks, many.tasks)
    assert one.xcoms["save_one"] == [SEED.new_text_message_id]
    assert many.xcoms["save_many"] == [SEED.new_text_message_id, SEED.system_message_id]
    saved = [a["message_id"] for a in sandbox.quick_answers()]
    # Saved by both DAGs, yet held once: the portal updates the answer that already has the message.
    assert saved.count(SEED.new_text_message_id) == 1
    assert saved.count(SEED.system_message_id) == 1


def test_permanent_error_fails_after_one_try_despite_retries(sandbox, webhook_conn, airflow_db):
    result = run_dag("bitrix24_test_permanent_error")
    assert result.state == "failed"
    assert result.tasks["save_to_missing_chat"] == ("failed", 1)
    assert sandbox.stats()["requests"] == 1


def test_taskflow_example_dag(sandbox, webhook_conn, airflow_db):
    result = run_dag("example_bitrix24_taskflow")
    assert result.state == "success", result.tasks
    assert result.xcoms["save_messages"] == [85805, 85803]
    saved = [a["message_id"] for a in sandbox.quick_answers()]
    assert saved.count(85805) == saved.count(85803) == 1


def test_taskflow_hook_with_airflow_errors_fails_a_revoked_webhook_after_one_try(sandbox, monkeypatch, airflow_db):
    data = json.loads(sandbox.airflow_conn_json("webhook"))
    data["host"] = data["host"].replace(SECRETS[0], "revoked-webhook-0000")
    set_conn(monkeypatch, "b24_revoked", data)
    result = run_dag("bitrix24_test_taskflow_revoked")
    assert result.state == "failed"
    assert result.tasks["read_profile"] == ("failed", 1)  # retries=3, none burnt
    assert sandbox.stats()["requests"] == 1


@pytest.mark.parametrize("dag_id", EXAMPLES)
def test_example_dags_follow_the_house_shape(dag_id, airflow_db):
    for dag in [load_dag(d) for d in _dag_ids_in(dag_id)]:
        assert "example" in dag.tags
        assert dag.catchup is False
        assert dag.doc_md


def _dag_ids_in(module: str) -> list[str]:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        from airflow.models.dagbag import DagBag
    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{module}.py"))
    return list(bag.dag_ids)
