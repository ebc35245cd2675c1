"""
### Wait for an operator's reply in an open-line session, then save it as a quick answer

`SessionHistorySensor` waits, deferred to the triggerer, until an operator writes in the session after the given
message id; `SaveQuickAnswerOperator` then copies the reply(ies) it found into the line's quick answers.

Uses the connection `bitrix24_default` (set `BITRIX24_CONN_ID` to use another one). The session, chat and message
ids are DAG params; their defaults belong to the built-in sandbox portal (`make demo`), where a client message and
an operator reply appear a few seconds after the sensor starts.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator
from airflow_provider_bitrix24.sensors.session_history import SessionHistorySensor

DAG_ID = "example_bitrix24_session_sensor"
CONN_ID = os.environ.get("BITRIX24_CONN_ID", "bitrix24_default")

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    default_args={"retries": 2},
    params={"chat_id": 1763, "session_id": 335, "after_message_id": 85847},
) as dag:
    # [START howto_sensor_session_history]
    wait_for_reply = SessionHistorySensor(
        task_id="wait_for_reply",
        session_id="{{ params.session_id }}",
        after_message_id="{{ params.after_message_id }}",
        author="operator",
        deferrable=True,
        poke_interval=5,  # seconds between polls; 30-60 s is usual on a real portal
        timeout=3600,
        bitrix24_conn_id=CONN_ID,
    )
    # [END howto_sensor_session_history]

    # [START howto_sensor_session_history_chain]
    save_reply = SaveQuickAnswerOperator(
        task_id="save_reply",
        chat_id="{{ params.chat_id }}",
        message_id=wait_for_reply.output,
        bitrix24_conn_id=CONN_ID,
    )
    # [END howto_sensor_session_history_chain]
