"""
### Alerts in a Bitrix24 chat

`Bitrix24Notifier` posts into a chat (`chat1900`, the sandbox portal's "Support team" group chat) when a task
fails or is retried (`default_args`) and when the DAG run ends (the DAG's callbacks). The task `flaky` fails on
its first try and succeeds on its second, so a run posts a retry alert, then the DAG's success message; trigger it
with `{"fail": true}` to see the failure alerts too. Deadline alerts: `example_bitrix24_deadline_alert`.

Uses the connection `bitrix24_default` (set `BITRIX24_CONN_ID` to use another one) and the chat in
`BITRIX24_ALERT_CHAT`; the connection's user must be a member of that chat, and the webhook needs the `im` scope.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_bitrix24.notifications import Bitrix24Notifier

CONN_ID = os.environ.get("BITRIX24_CONN_ID", "bitrix24_default")
CHAT = os.environ.get("BITRIX24_ALERT_CHAT", "chat1900")

# [START howto_notifier_bitrix24]
on_failure = Bitrix24Notifier(dialog_id=CHAT, bitrix24_conn_id=CONN_ID)  # the default text: what, where, the error
on_retry = Bitrix24Notifier(
    dialog_id=CHAT,
    text=("[B]Retrying {{ ti.task_id }}[/B] of {{ dag.dag_id }} after try {{ ti.try_number }}: {{ exception }}"),
    bitrix24_conn_id=CONN_ID,
)
on_dag_success = Bitrix24Notifier(
    dialog_id=CHAT, text="[B]{{ dag.dag_id }}[/B] finished: run {{ run_id }}", bitrix24_conn_id=CONN_ID
)
# [END howto_notifier_bitrix24]

with DAG(
    dag_id="example_bitrix24_notifier",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    params={"fail": False},
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=0),
        "on_failure_callback": on_failure,
        "on_retry_callback": on_retry,
    },
    on_success_callback=on_dag_success,
    on_failure_callback=Bitrix24Notifier(
        dialog_id=CHAT, text="[B]{{ dag.dag_id }}[/B] failed: run {{ run_id }}", bitrix24_conn_id=CONN_ID
    ),
) as dag:

    @task
    def flaky(**context: Any) -> str:
        """Fail on the first try; on the second too when the run's conf says ``fail``."""
        if context["ti"].try_number == 1 or context["params"]["fail"]:
            raise RuntimeError(f"flaky failed on try {context['ti'].try_number}")
        return "ok"

    flaky()
