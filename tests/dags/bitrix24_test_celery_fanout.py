"""
Many processes on one portal: parallel one-call-per-message saves and 100+ deferred session waits.

Run by ``tests/e2e_celery`` on a CeleryExecutor deployment (two workers, two triggerers). Every save task saves
its share of the bulk chat's messages with one ``imopenlines.message.quick.save`` call per message, so the portal's
leaky bucket, not the round trips, sets the pace; every sensor waits, deferred, for a new message in one pool
session. What each task works on comes from the run's conf:

* ``chat_id``, ``first_message_id``: the chat of the saved messages and the first of them (consecutive ids);
* ``first_session_id``: the session of sensor 0 (sensor ``i`` watches ``first_session_id + i``);
* ``after_message_id``: the sensors count only messages with a greater id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, BaseOperator

from airflow_provider_bitrix24.sensors.session_history import SessionHistorySensor

DAG_ID = "bitrix24_test_celery_fanout"
CONN_ID = "bitrix24_celery"
SAVE_TASKS = 4
MESSAGES_PER_TASK = 60
SENSORS = 104
POKE_INTERVAL = 10


class SaveOneByOne(BaseOperator):
    """Save ``count`` consecutive messages, one REST call each; return the saved ids."""

    template_fields = ("chat_id", "first_message_id")

    def __init__(self, *, chat_id: Any, first_message_id: Any, offset: int, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chat_id = chat_id
        self.first_message_id = first_message_id
        self.offset = offset
        self.count = count

    def execute(self, context: Any) -> list[int]:
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        hook = Bitrix24Hook(bitrix24_conn_id=CONN_ID)
        first = int(self.first_message_id) + self.offset
        saved = []
        for message_id in range(first, first + self.count):
            hook.call("imopenlines.message.quick.save", {"CHAT_ID": int(self.chat_id), "MESSAGE_ID": message_id})
            saved.append(message_id)
        return saved


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=SAVE_TASKS + SENSORS,
    default_args={"retries": 0},
) as dag:
    for number in range(SAVE_TASKS):
        SaveOneByOne(
            task_id=f"save_{number}",
            chat_id="{{ dag_run.conf['chat_id'] }}",
            first_message_id="{{ dag_run.conf['first_message_id'] }}",
            offset=number * MESSAGES_PER_TASK,
            count=MESSAGES_PER_TASK,
        )
    for number in range(SENSORS):
        SessionHistorySensor(
            task_id=f"wait_{number:03d}",
            session_id=f"{{{{ dag_run.conf['first_session_id'] + {number} }}}}",
            after_message_id="{{ dag_run.conf['after_message_id'] }}",
            deferrable=True,
            poke_interval=POKE_INTERVAL,
            timeout=900,
            bitrix24_conn_id=CONN_ID,
        )
