"""Helpers shared by the tests (kept out of conftest so that there is one copy of their state)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: A throw-away Airflow home for the whole test session (fixed in the environment so every import agrees).
AIRFLOW_HOME = os.environ.setdefault("BITRIX24_TEST_AIRFLOW_HOME", tempfile.mkdtemp(prefix="bitrix24-airflow-home-"))
#: The example DAGs plus the test-only DAGs of tests/dags, in one DAG folder.
DAGS_FOLDER = Path(AIRFLOW_HOME) / "dags"


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, value: str | dict) -> None:
    """Define an Airflow connection through the environment, as JSON."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value if isinstance(value, str) else json.dumps(value))


@dataclass
class DagRunResult:
    """What a ``dag.test()`` run left in the metadata database."""

    state: str
    tasks: dict[str, tuple[str | None, int]] = field(default_factory=dict)  # task_id -> (state, try_number)
    xcoms: dict[str, Any] = field(default_factory=dict)  # task_id -> return_value


def load_dag(dag_id: str):
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 2
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"DAG {dag_id} not found in {DAGS_FOLDER}"
    return dag


def run_dag(dag_id: str, **kwargs: Any) -> DagRunResult:
    """Run a DAG of the DAG folder with ``dag.test()`` and collect task states and return values."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    try:
        from airflow.models.xcom import XComModel as XComTable  # Airflow 3
    except ImportError:
        from airflow.models import XCom as XComTable  # Airflow 2

    dag_run = load_dag(dag_id).test(**kwargs)
    result = DagRunResult(state=str(getattr(dag_run.state, "value", dag_run.state)))
    with create_session() as session:
        for ti in session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == dag_run.run_id
        ):
            result.tasks[ti.task_id] = (str(getattr(ti.state, "value", ti.state)), ti.try_number)
        rows = session.query(XComTable).filter(XComTable.dag_id == dag_id, XComTable.run_id == dag_run.run_id)
        for row in rows:
            if row.key == "return_value":
                value = row.value
                if isinstance(value, (bytes, str)):
                    with contextlib.suppress(ValueError):
                        value = json.loads(value)
                result.xcoms[row.task_id] = value
    return result


def oauth_connection(portal: Any, tokens: dict[str, Any]) -> dict[str, Any]:
    """An OAuth connection to a sandbox portal holding the given token pair."""
    return {
        "conn_type": "bitrix24",
        "host": portal.base_url,
        "extra": {
            "auth_type": "oauth",
            "client_id": portal.oauth_client_id,
            "client_secret": portal.oauth_client_secret,
            "refresh_token": tokens["refresh_token"],
            "access_token": tokens["access_token"],
            "oauth_url": portal.oauth_url,
        },
    }


def token_variable(conn: dict[str, Any]) -> str:
    """The Variable that keeps the rotated token pair of an OAuth connection's chain: ``bitrix24_oauth_token__<chain id>``."""
    from airflow_provider_bitrix24.client import OAuthCredentials, parse_connection
    from airflow_provider_bitrix24.client.oauth import chain_id

    config = parse_connection(host=conn["host"], extra=conn["extra"])
    assert isinstance(config.auth, OAuthCredentials)
    return f"bitrix24_oauth_token__{chain_id(config.portal_key, config.auth)}"
