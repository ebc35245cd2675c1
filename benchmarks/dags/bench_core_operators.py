"""
### Baseline for B3: a DAG of core operators only

The same shape as the provider's example DAGs (doc, params, default_args, two chained tasks), with operators that
ship with Airflow itself. Used only to measure DAG-parse cost.
"""

from __future__ import annotations

from datetime import datetime

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator
    from airflow.operators.empty import EmptyOperator

with DAG(
    dag_id="bench_core_operators",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["benchmark"],
    doc_md=__doc__,
    default_args={"retries": 2},
    params={"chat_id": 1763, "session_id": 335},
) as dag:
    wait = BashOperator(task_id="wait", bash_command="echo {{ params.session_id }}")
    save = EmptyOperator(task_id="save")
    wait >> save
