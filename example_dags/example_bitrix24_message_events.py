"""
### Save customers' questions as quick answers the moment they are written (event-driven, Airflow 3)

An asset watcher reads the connection user's messenger event queue (`im.v2.Event.get`) and fires for new client
messages of line 1 that end with a question mark; the DAG runs on those asset events, with no sensor holding a
slot, and saves each message as a quick answer of its chat's line.

One asset event carries the matching messages of one poll (`{"messages": [...]}`); a run may consume several
events, so the DAG reads all of `triggering_asset_events` with `messages_of`, which also drops a message handed
out twice (delivery is at-least-once). The connection's user must be a member of the line's chats (an operator of
the line who joined them) and no other application may read that user's queue.

Airflow 2 has no asset watchers: there this DAG is not scheduled (see `example_bitrix24_session_sensor`).
Uses the connection `bitrix24_default` (set `BITRIX24_CONN_ID` to use another one).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator

DAG_ID = "example_bitrix24_message_events"
CONN_ID = os.environ.get("BITRIX24_CONN_ID", "bitrix24_default")

try:
    from airflow.sdk import Asset, AssetWatcher
except ImportError:  # Airflow 2: no event-driven scheduling
    schedule: Any = None
else:
    # [START howto_trigger_bitrix24_messages]
    from airflow_provider_bitrix24.triggers import Bitrix24MessageTrigger

    questions = Bitrix24MessageTrigger(
        bitrix24_conn_id=CONN_ID,
        line_ids=[1],
        authors="client",  # the default
        text_pattern=r"\?\s*$",  # RE2
        poll_interval=10,
    )
    # The same through common-messaging (extra [messaging]):
    #   MessageQueueTrigger(scheme="bitrix24", bitrix24_conn_id=CONN_ID, line_ids=[1], text_pattern=r"\?\s*$")
    schedule = [Asset("bitrix24_line_1_questions", watchers=[AssetWatcher(name="line_1_questions", trigger=questions)])]
    # [END howto_trigger_bitrix24_messages]

with DAG(
    dag_id=DAG_ID,
    schedule=schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    default_args={"retries": 2},
) as dag:

    @task
    def questions_by_chat(**context: Any) -> list[dict[str, Any]]:
        from airflow_provider_bitrix24.message_events import by_chat, messages_of

        events = [e for batch in context.get("triggering_asset_events", {}).values() for e in batch]
        return by_chat(messages_of(events))

    SaveQuickAnswerOperator.partial(task_id="save_questions", bitrix24_conn_id=CONN_ID).expand_kwargs(
        questions_by_chat()
    )
