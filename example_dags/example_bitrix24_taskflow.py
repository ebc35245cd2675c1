"""
### Bitrix24 hook in TaskFlow tasks, with the operators' error behaviour

`Bitrix24Hook(..., airflow_errors=True)` makes `@task` code fail like the provider's operators: a permanent error
(revoked webhook, missing scope, wrong chat) fails the task at once, without burning its `retries`; a transient
one that outlasted the client's own retries leaves the task to them. Without it, the hook raises the client's
errors as they are, and Airflow retries every one of them.

The task saves open-line messages as quick answers in one `batch` run; a message that cannot be saved is raised
the same way, with `to_airflow`. Uses the Airflow connection `bitrix24_default` (set `BITRIX24_CONN_ID` to use
another one); the chat and message ids are DAG params whose defaults are in the built-in sandbox portal
(`make demo`).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_bitrix24.failures import to_airflow
from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

DAG_ID = "example_bitrix24_taskflow"
CONN_ID = os.environ.get("BITRIX24_CONN_ID", "bitrix24_default")

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    params={"chat_id": 1763, "message_ids": [85805, 85803]},
    render_template_as_native_obj=True,
) as dag:
    # [START howto_hook_bitrix24_taskflow]
    @task(retries=3, retry_delay=timedelta(seconds=30))
    def save_messages(chat_id: int, message_ids: list[int]) -> list[int]:
        hook = Bitrix24Hook(bitrix24_conn_id=CONN_ID, airflow_errors=True)
        save = "imopenlines.message.quick.save"
        items = hook.call_batch({str(m): (save, {"CHAT_ID": chat_id, "MESSAGE_ID": m}) for m in message_ids})
        for item in items:
            if item.error is not None:  # one command's error: raise it the way the operators do
                raise to_airflow(item.error)
        return [int(item.key) for item in items]

    # [END howto_hook_bitrix24_taskflow]

    save_messages(chat_id="{{ params.chat_id }}", message_ids="{{ params.message_ids }}")
