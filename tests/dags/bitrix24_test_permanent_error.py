"""A DAG whose save hits a permanent portal error; with retries=3 it must still end after one try."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator

with DAG(
    dag_id="bitrix24_test_permanent_error",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=1)},
) as dag:
    SaveQuickAnswerOperator(task_id="save_to_missing_chat", chat_id=999999, message_id=[100001, 100002])
