"""
A deadline alert's async path posts from a triggerer, without holding up its event loop.

What Airflow 3.1+ runs when a deadline with ``AsyncCallback(Bitrix24Notifier, kwargs=...)`` is missed: the
scheduler queues a ``CallbackTrigger`` whose kwargs carry the notifier's path, its kwargs and a small context
(``dag_run``, ``deadline``); the triggerer imports the notifier and awaits ``Bitrix24Notifier(**kwargs,
context=...)``. Here that real ``airflow.triggers.callback.CallbackTrigger`` runs in a child process in the real
``TriggerRunner`` on its supervisor-comms path (:mod:`tests.support.triggerer`: the connection comes through
``GetConnection``, secrets are masked through ``MaskSecret``), next to a heartbeat coroutine. The portal answers
``im.message.add`` 2 s late; the heartbeat must not stall for more than 1 s, and the message must arrive. A second
alert, against a portal where nothing listens, must end as a callback success with one log line and no traceback.
"""

from __future__ import annotations

import importlib.metadata
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import ROOT
from tests.support.airflow_env import deployment_env
from tests.support.triggerer import PREFIX

VERSION = tuple(int(x) for x in importlib.metadata.version("apache-airflow").split(".")[:2])
NOTIFIER = "airflow_provider_bitrix24.notifications.bitrix24.Bitrix24Notifier"
PORTAL_DELAY = 2.0
MAX_STALL = 1.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(VERSION < (3, 1), reason="deadline alerts (CallbackTrigger) are new in Airflow 3.1"),
]


def _alert(conn_id: str, text: str) -> dict[str, Any]:
    """The trigger the scheduler queues for a missed deadline (``Deadline.handle_miss``), as the triggerer gets it."""
    return {
        "classpath": "airflow.triggers.callback.CallbackTrigger",
        "kwargs": {
            "callback_path": NOTIFIER,
            "callback_kwargs": {
                "dialog_id": f"chat{SEED.group_chat_id}",
                "text": text,
                "bitrix24_conn_id": conn_id,
                "context": {
                    "dag_run": {"dag_id": "nightly_export", "dag_run_id": "scheduled__2026-03-11T00:00:00+00:00"},
                    "deadline": {"id": "0199a0b0", "deadline_time": "2026-03-11T00:10:00+00:00"},
                },
            },
        },
    }


def test_a_deadline_alert_posts_from_the_triggerer_without_stalling_its_loop(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    with SandboxPortal(SandboxConfig.preset("unlimited")) as portal:
        portal.inject_fault("im.message.add", "slow", count=1, delay=PORTAL_DELAY)
        live = json.loads(portal.airflow_conn_json("webhook"))
        dead = {"conn_type": "bitrix24", "host": f"http://127.0.0.1:{dead_port}/rest/1/fake-webhook-0000/"}
        config = {
            "triggers": [
                _alert("b24_alerts", "[B]{{ dag_run.dag_id }}[/B] missed its deadline {{ deadline.deadline_time }}"),
                _alert("b24_dead", "never delivered"),
            ],
            "deadline": 60,
            "api_delay": 0.005,
            "variables": {},
            "connections": {"b24_alerts": live, "b24_dead": dead},
            "sync_interval": 0.1,
        }
        config_path = tmp_path / "triggerer.json"
        config_path.write_text(json.dumps(config))
        child = subprocess.run(
            [sys.executable, "-m", "tests.support.triggerer", str(config_path)],
            cwd=ROOT,
            env=deployment_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
        )
        messages = portal.chat_messages(SEED.group_chat_id)
    lines = [json.loads(line[len(PREFIX) :]) for line in child.stdout.splitlines() if line.startswith(PREFIX)]
    results = [line for line in lines if line.get("event") == "result"]
    assert results, f"no result from the triggerer child:\n{child.stdout[-3000:]}\n{child.stderr[-3000:]}"
    result = results[-1]
    detail = json.dumps({k: v for k, v in result.items() if k != "stacks"}, indent=1)
    assert result["completed"], detail
    assert result["failures"] == {}, detail
    # Both callbacks end as successes: a notification that cannot be sent is logged, never raised.
    assert result["events"] == {"1": {"state": "success", "body": None}, "2": {"state": "success", "body": None}}, (
        detail
    )
    assert messages[-1]["text"] == "[B]nightly_export[/B] missed its deadline 2026-03-11T00:10:00+00:00\n" + (
        "[URL=http://localhost:8080/dags/nightly_export/runs/scheduled__2026-03-11T00%3A00%3A00%2B00%3A00]DAG run[/URL]"
    )
    assert messages[-1]["author_id"] == SEED.webhook_user_id
    assert sum("never delivered" in m["text"] for m in messages) == 0
    # The 2 s answer was awaited, not waited for: the loop kept beating.
    assert result["heartbeat"]["max_stall"] < MAX_STALL, detail
    output = child.stdout + child.stderr
    assert output.count("Bitrix24 notification to chat1900 not sent: CONNECTION_FAILED") == 1
    assert "Traceback" not in output
    assert "fake-webhook-0000" not in output
    assert portal.webhook_code not in output
