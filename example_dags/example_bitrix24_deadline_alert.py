"""
### A deadline alert in a Bitrix24 chat (Airflow 3.1+)

When a run of this DAG is still going 10 minutes after it was queued, the triggerer awaits `Bitrix24Notifier`
(`AsyncCallback`), which posts into the chat through the async client without blocking the triggerer's event loop.
Deadline alerts are experimental in Airflow 3.1+; on older versions this DAG has no deadline. Its task sleeps for
`params.minutes` (default 0: the run ends before the deadline).

Uses the connection `bitrix24_default` (set `BITRIX24_CONN_ID` to use another one) and the chat in
`BITRIX24_ALERT_CHAT`. `airflow dags test` cannot run a DAG with a deadline alert on Airflow 3.3.2 (it fails
inside Airflow before the first task); run it in a deployment with a scheduler and a triggerer.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

CONN_ID = os.environ.get("BITRIX24_CONN_ID", "bitrix24_default")
CHAT = os.environ.get("BITRIX24_ALERT_CHAT", "chat1900")

deadline: dict[str, Any] = {}
try:
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference
except ImportError:  # Airflow < 3.1: no deadline alerts
    pass
else:
    # [START howto_notifier_bitrix24_deadline]
    from airflow_provider_bitrix24.notifications import Bitrix24Notifier

    deadline["deadline"] = DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=10),
        callback=AsyncCallback(
            Bitrix24Notifier,
            kwargs={
                "dialog_id": CHAT,
                "text": "[B]{{ dag_run.dag_id }}[/B] is still running 10 minutes after it was queued",
                "bitrix24_conn_id": CONN_ID,
            },
        ),
    )
    # [END howto_notifier_bitrix24_deadline]

with DAG(
    dag_id="example_bitrix24_deadline_alert",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "bitrix24"],
    doc_md=__doc__,
    params={"minutes": 0},
    **deadline,
) as dag:

    @task
    def slow(**context: Any) -> None:
        time.sleep(float(context["params"]["minutes"]) * 60)

    slow()
