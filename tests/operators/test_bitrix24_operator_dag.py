"""The generic-call example DAG, run with ``dag.test()`` against the sandbox."""

from __future__ import annotations

from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import run_dag

SECRET = "sandbox-webhook-0000"


def test_generic_example_dag_posts_lists_and_batches(sandbox, webhook_conn, airflow_db):
    result = run_dag("example_bitrix24_generic")
    assert result.state == "success", result.tasks
    posted = sandbox.chat_messages(SEED.group_chat_id)[-1]
    assert result.xcoms["post_message"] == posted["id"]
    assert posted["text"].startswith("Daily report for [B]20")
    assert [int(row["ID"]) for row in result.xcoms["list_employees"]] == [1, 2, 3]
    outcome = result.xcoms["who_am_i"]
    assert outcome["errors"] == {}
    assert outcome["results"]["me"]["ID"] == str(SEED.webhook_user_id)
    assert "im" in outcome["results"]["scopes"]
    assert SECRET not in repr(result.xcoms)
