"""
End to end on a real Airflow 3: api-server, scheduler, dag-processor and triggerer as separate processes on
loopback, the sandbox portal beside them.

The session-sensor example DAG is triggered; the test waits until its sensor is deferred to the triggerer, only
then makes the operator's reply appear on the portal, and expects the run to succeed with the reply saved as a
quick answer. Run with ``make e2e``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import ROOT
from tests.support.airflow_processes import AirflowProcesses, api_healthy, local_deployment_env
from tests.support.waiting import free_port, wait_for

pytestmark = pytest.mark.e2e

DAG_ID = "example_bitrix24_session_sensor"
COMPONENTS = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}


class Airflow(AirflowProcesses):
    """A real Airflow 3 deployment in a temporary home."""

    def start(self) -> None:
        self.launch(COMPONENTS)

    def query(self, sql: str, *params: object) -> list[tuple]:
        with sqlite3.connect(self.home / "airflow.db", timeout=30) as db:
            return db.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def deployment() -> Iterator[tuple[Airflow, SandboxPortal]]:
    import airflow

    if int(airflow.__version__.split(".")[0]) < 3:
        pytest.skip("the end-to-end deployment runs the Airflow 3 components")
    home = Path(tempfile.mkdtemp(prefix="bitrix24-e2e-"))
    (home / "dags").mkdir()
    for source in (ROOT / "example_dags").glob("*.py"):
        shutil.copy(source, home / "dags" / source.name)
    portal = SandboxPortal(SandboxConfig.preset("standard")).start()
    api_port = free_port()
    env = local_deployment_env(home, api_port, portal.airflow_conn_json("webhook"))
    deployment = Airflow(home, env)
    deployment.cli("db", "migrate", timeout=300)
    deployment.start()
    try:
        wait_for("the api-server", lambda: api_healthy(deployment, api_port), 180)
        wait_for("the DAG to be parsed", lambda: deployment.query("select 1 from dag where dag_id = ?", DAG_ID), 180)
        yield deployment, portal
    finally:
        deployment.stop()
        portal.stop()
        if os.environ.get("BITRIX24_E2E_KEEP") is None:
            shutil.rmtree(home, ignore_errors=True)


def test_deferred_sensor_waits_in_the_triggerer_and_the_reply_is_saved(deployment):
    airflow, portal = deployment
    conf = {
        "chat_id": SEED.support_chat_id,
        "session_id": SEED.support_latest_session_id,
        "after_message_id": max(portal.engine.state.sessions[SEED.support_latest_session_id].message_ids),
    }
    airflow.cli("dags", "trigger", DAG_ID, "--conf", json.dumps(conf))
    run_id = wait_for("the DAG run", lambda: airflow.query("select run_id from dag_run where dag_id = ?", DAG_ID), 60)[
        0
    ][0]

    def sensor_state() -> str | None:
        airflow.alive()
        rows = airflow.query(
            "select state from task_instance where dag_id = ? and run_id = ? and task_id = 'wait_for_reply'",
            DAG_ID,
            run_id,
        )
        return rows[0][0] if rows else None

    # The sensor must be handed to the triggerer while the portal has nothing for it yet.
    wait_for("the sensor to defer", lambda: sensor_state() == "deferred", 180)
    assert airflow.query("select count(*) from trigger")[0][0] >= 1
    # The triggerer picks the trigger up and polls the portal (through ``batch``), finding nothing yet.
    polls_before = portal.stats()["by_method"].get("batch", 0)
    wait_for("the triggerer to poll the portal", lambda: portal.stats()["by_method"].get("batch", 0) > polls_before, 90)
    assert sensor_state() == "deferred"

    portal.add_message(conf["session_id"], SEED.client_user_ids[0], "Is delivery free?")
    reply_id = portal.add_message(conf["session_id"], SEED.operator_ids[0], "Yes, delivery is free over 50 EUR.")

    final = wait_for(
        "the DAG run to finish",
        lambda: (
            (s := airflow.query("select state from dag_run where run_id = ?", run_id)[0][0]) in {"success", "failed"}
            and s
        ),
        180,
    )
    states = dict(airflow.query("select task_id, state from task_instance where run_id = ?", run_id))
    assert final == "success", (states, airflow.home)
    assert states == {"wait_for_reply": "success", "save_reply": "success"}
    saved = [a for a in portal.quick_answers() if a["message_id"] == reply_id]
    assert len(saved) == 1
    assert saved[0]["text"] == "Yes, delivery is free over 50 EUR."
    assert "sandbox-webhook-0000" not in airflow.logs()
