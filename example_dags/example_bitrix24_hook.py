"""
### Bitrix24 hook: check the connection, then read an open-line chat's latest session

Uses the Airflow connection `bitrix24_default` (set `BITRIX24_CONN_ID` to use another one). The chat id is a DAG
param; its default is a chat of the built-in sandbox portal (`make demo`).
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, AirflowFailException, task

from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

DAG_ID = "example_bitrix24_hook"
CONN_ID = os.environ.get("BITRIX24_CONN_ID", "bitrix24_default")

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    params={"chat_id": 1763},
) as dag:
    # [START howto_hook_bitrix24]
    @task
    def check_connection() -> str:
        ok, message = Bitrix24Hook(bitrix24_conn_id=CONN_ID).test_connection()
        if not ok:
            raise AirflowFailException(message)
        return message

    @task
    def latest_session(chat_id: str) -> dict:
        hook = Bitrix24Hook(bitrix24_conn_id=CONN_ID)
        dialog = hook.call("imopenlines.dialog.get", {"CHAT_ID": int(chat_id)})
        session_id = int(dialog["entity_data_1"].split("|")[5])
        history = hook.call("imopenlines.session.history.get", {"SESSION_ID": session_id})
        messages = history["message"] or {}
        return {"chat_id": int(chat_id), "session_id": session_id, "messages": len(messages)}

    # [END howto_hook_bitrix24]

    check_connection() >> latest_session("{{ params.chat_id }}")
