"""
### Call any Bitrix24 REST method

`Bitrix24Operator` calls a method once (`method` and `api_params`, the result in XCom), reads every page of a list
method (`all_pages=True`), or sends many commands through `batch` (`commands`; the results and the errors of the
commands come back apart). Here: post a templated message into a chat, list the portal's employees, and read the
user and the scopes in one batch. Uses the connection `bitrix24_default` (set `BITRIX24_CONN_ID` to use another one)
and the chat in `BITRIX24_ALERT_CHAT` (default: the sandbox portal's group chat).
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_bitrix24.operators.bitrix24 import Bitrix24Operator

CONN_ID = os.environ.get("BITRIX24_CONN_ID", "bitrix24_default")
CHAT = os.environ.get("BITRIX24_ALERT_CHAT", "chat1900")

with DAG(
    dag_id="example_bitrix24_generic",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    default_args={"retries": 2},
) as dag:
    # [START howto_operator_bitrix24_call]
    post = Bitrix24Operator(
        task_id="post_message",
        method="im.message.add",
        api_params={"DIALOG_ID": CHAT, "MESSAGE": "Daily report for [B]{{ ds }}[/B] is ready", "URL_PREVIEW": "N"},
        bitrix24_conn_id=CONN_ID,
    )
    # [END howto_operator_bitrix24_call]

    # [START howto_operator_bitrix24_all_pages]
    employees = Bitrix24Operator(
        task_id="list_employees",
        method="user.get",
        api_params={"ACTIVE": True},
        all_pages=True,
        bitrix24_conn_id=CONN_ID,
    )
    # [END howto_operator_bitrix24_all_pages]

    # [START howto_operator_bitrix24_batch]
    who_am_i = Bitrix24Operator(
        task_id="who_am_i",
        commands={"me": ("profile", None), "scopes": ("scope", None)},
        bitrix24_conn_id=CONN_ID,
    )
    # [END howto_operator_bitrix24_batch]

    post >> employees >> who_am_i
