"""A TaskFlow task whose hook meets a revoked webhook; with airflow_errors and retries=3 it ends after one try."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

with DAG(
    dag_id="bitrix24_test_taskflow_revoked",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
) as dag:

    @task(retries=3, retry_delay=timedelta(seconds=1))
    def read_profile() -> dict:
        return Bitrix24Hook(bitrix24_conn_id="b24_revoked", airflow_errors=True).call("profile")

    read_profile()
