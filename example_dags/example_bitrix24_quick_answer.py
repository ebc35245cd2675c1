"""
### Save open-line messages as quick answers

Two ways to call `SaveQuickAnswerOperator`: one fixed message, and a templated list of messages (the list comes
from the DAG params, so a run can be triggered with other ids). Uses the connection `bitrix24_default`
(set `BITRIX24_CONN_ID` to use another one); the default ids belong to the built-in sandbox portal (`make demo`).
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator

CONN_ID = os.environ.get("BITRIX24_CONN_ID", "bitrix24_default")

with DAG(
    dag_id="example_bitrix24_quick_answer",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    default_args={"retries": 2},
) as dag:
    # [START howto_operator_save_quick_answer]
    save_one = SaveQuickAnswerOperator(
        task_id="save_one",
        chat_id=1763,
        message_id=85805,
        bitrix24_conn_id=CONN_ID,
    )
    # [END howto_operator_save_quick_answer]

with DAG(
    dag_id="example_bitrix24_quick_answer_list",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    default_args={"retries": 2},
    params={"chat_id": 1763, "message_ids": [85805, 85803, 85805]},
) as dag_list:
    # [START howto_operator_save_quick_answer_templated]
    save_many = SaveQuickAnswerOperator(
        task_id="save_many",
        chat_id="{{ params.chat_id }}",
        message_id="{{ params.message_ids }}",
        bitrix24_conn_id=CONN_ID,
    )
    # [END howto_operator_save_quick_answer_templated]
