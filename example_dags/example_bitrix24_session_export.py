"""
### Export yesterday's open-line sessions, then keep the operators' answers as quick answers

Each day, `SessionHistoryToObjectStorageOperator` writes the sessions that changed during the run's data interval
and their messages as newline-delimited JSON under `BITRIX24_EXPORT_PATH` (a local folder by default; any
`ObjectStoragePath` URL works). The next task reads the exported messages and saves the operators' answers that
match `ANSWER_PATTERN` as quick answers of their lines: one message per distinct text, through
`SaveQuickAnswerOperator` (batched, within the portal's limits). Needs the `crm` and `imopenlines` scopes.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath, task
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator
from airflow_provider_bitrix24.transfers import SessionHistoryToObjectStorageOperator

CONN_ID = os.environ.get("BITRIX24_CONN_ID", "bitrix24_default")
EXPORT_PATH = os.environ.get("BITRIX24_EXPORT_PATH", "file:///tmp/bitrix24-export")
ANSWER_PATTERN = os.environ.get("BITRIX24_ANSWER_PATTERN", r"(?i)shipped|order number")

with DAG(
    dag_id="example_bitrix24_session_export",
    # Daily, with yesterday as the data interval (Airflow 3's "@daily" has no interval).
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    default_args={"retries": 2},
) as dag:
    # [START howto_transfer_session_history]
    export = SessionHistoryToObjectStorageOperator(
        task_id="export_sessions",
        bitrix24_conn_id=CONN_ID,
        path=EXPORT_PATH,
        format="jsonl",
    )
    # [END howto_transfer_session_history]

    @task
    def pick_answers(exported: dict) -> list[dict]:
        """One operator answer per distinct text matching ANSWER_PATTERN, grouped by chat."""
        pattern = re.compile(ANSWER_PATTERN)
        chosen: dict[str, tuple[int, int]] = {}
        with ObjectStoragePath(exported["messages_path"]).open("r") as handle:
            # readline, not `for line in handle`: Airflow 2's file wrapper is not iterable.
            for line in iter(handle.readline, ""):
                message = json.loads(line)
                if message["author_type"] == "operator" and pattern.search(message["text"]):
                    chosen.setdefault(message["text"], (message["chat_id"], message["id"]))
        by_chat: dict[int, list[int]] = {}
        for chat_id, message_id in chosen.values():
            by_chat.setdefault(chat_id, []).append(message_id)
        return [{"chat_id": chat, "message_id": ids} for chat, ids in sorted(by_chat.items())]

    SaveQuickAnswerOperator.partial(task_id="save_answers", bitrix24_conn_id=CONN_ID).expand_kwargs(
        pick_answers(export.output)
    )
