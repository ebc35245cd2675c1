"""
Event-driven DAG runs on a real Airflow 3.3 deployment (scheduler, dag-processor, triggerer and api-server as
separate processes), the sandbox portal beside them. Run with ``make e2e``.

One deployment, 50 watchers of ``Bitrix24MessageTrigger`` on one connection, on four assets:

* ``b24_all``: every client message (unfiltered); ``b24_filtered``: client messages of line 2 mentioning a refund;
  ``b24_per_message``: every client message, one asset event per message (the form Airflow splits, see below);
  ``b24_many``: 47 more watchers (one chat id each, none of them written in), to count requests.

Steps, in order (the idle period is 30 s, scaled down from two minutes: 15 poll intervals prove the point):

1. 200 messages in 20 chats on 2 lines: the asset events hold exactly the matching messages, each once, and every
   asset event of ``b24_all`` reaches a DAG run. For ``b24_per_message`` the test records how many stored events
   reached runs (Airflow 3.3.2 leaves a burst's tail to the next event: apache/airflow#56050).
2. 30 idle seconds: no asset event, and about one ``im.v2.Event.get`` per 2 s interval for all 50 watchers.
3. A burst of 100 messages; the triggerer is killed with SIGKILL in the middle and started again: no message is
   lost, and the only duplicates are one poll's batch (the one not confirmed to the portal yet).

The figures are written to ``$BITRIX24_E2E_REPORT`` when set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
from tests.e2e.test_airflow_e2e import COMPONENTS, Airflow
from tests.helpers import ROOT
from tests.support.airflow_processes import api_healthy, local_deployment_env
from tests.support.waiting import free_port, wait_for

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
CHATS = 20
POOL_CLIENT = 109
OPERATOR = 2
GET = "im.v2.event.get"
IDLE_SECONDS = 30

DAG_FILE = f"""
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, AssetWatcher

from airflow_provider_bitrix24.triggers import Bitrix24MessageTrigger


def watcher(name, **kwargs):
    trigger = Bitrix24MessageTrigger(bitrix24_conn_id="bitrix24_default", poll_interval={INTERVAL}, **kwargs)
    return AssetWatcher(name=name, trigger=trigger)


ASSETS = {{
    "all": Asset("b24_all", watchers=[watcher("all")]),
    "filtered": Asset("b24_filtered", watchers=[watcher("filtered", line_ids=[2], text_pattern=r"(?i)refund")]),
    "per_message": Asset("b24_per_message", watchers=[watcher("per_message", one_event_per_message=True)]),
    "many": Asset("b24_many", watchers=[watcher(f"many_{{i}}", chat_ids=[900000 + i]) for i in range(47)]),
}}

for name, asset in ASSETS.items():
    with DAG(dag_id=f"b24_{{name}}", schedule=[asset], start_date=datetime(2026, 1, 1), catchup=False):
        EmptyOperator(task_id="consume")
"""


class Deployment(Airflow):
    def restart(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, sig)
        proc.wait(30)
        log = (self.home / f"{name}.{int(time.time())}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *COMPONENTS[name]],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def payloads(self, asset: str) -> list[dict]:
        rows = self.query(
            "select e.extra from asset_event e join asset a on a.id = e.asset_id where a.name = ? order by e.id",
            asset,
        )
        return [json.loads(extra)["payload"] for (extra,) in rows]

    def message_ids(self, asset: str) -> list[int]:
        ids = []
        for payload in self.payloads(asset):
            ids += [m["id"] for m in payload["messages"]] if "messages" in payload else [payload["id"]]
        return ids

    def consumed(self, asset: str) -> tuple[int, int]:
        """(asset events stored, asset events consumed by some DAG run)."""
        stored = self.query(
            "select count(*) from asset_event e join asset a on a.id = e.asset_id where a.name = ?", asset
        )
        used = self.query(
            "select count(distinct e.id) from asset_event e join asset a on a.id = e.asset_id "
            "join dagrun_asset_event d on d.event_id = e.id where a.name = ?",
            asset,
        )
        return stored[0][0], used[0][0]


def _prepare(portal: SandboxPortal) -> list[tuple[int, int]]:
    """20 pool chats, 10 on line 1 and 10 on line 2, with the webhook user (1) as a member; their sessions."""
    state = portal.engine.state
    sessions = []
    with state.lock:
        for index, chat_id in enumerate(portal.seed.extra_chat_ids):
            chat = state.chats[chat_id]
            if index >= CHATS // 2:
                chat.line_id = 2
                chat.user_code = f"livechat|2|{40001 + index}|{POOL_CLIENT}"
            chat.member_ids.append(1)
            sessions.append((chat.session_ids[-1], chat.line_id))
    return sessions


@pytest.fixture(scope="module")
def deployment() -> Iterator[tuple[Deployment, SandboxPortal, list[tuple[int, int]]]]:
    import airflow

    if tuple(int(p) for p in airflow.__version__.split(".")[:2]) < (3, 3):
        pytest.skip("ack-mode shared streams need Airflow 3.3")
    home = Path(tempfile.mkdtemp(prefix="bitrix24-events-e2e-"))
    (home / "dags").mkdir()
    (home / "dags" / "b24_message_events.py").write_text(DAG_FILE)
    portal = SandboxPortal(SandboxConfig.preset("standard", extra_sessions=CHATS)).start()
    sessions = _prepare(portal)
    api_port = free_port()
    env = local_deployment_env(
        home,
        api_port,
        portal.airflow_conn_json("webhook"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="6",
    )
    deployment = Deployment(home, env)
    deployment.cli("db", "migrate", timeout=300)
    deployment.start()
    try:
        wait_for("the api-server", lambda: api_healthy(deployment, api_port), 180)
        wait_for("the watchers' triggers", lambda: deployment.query("select count(*) from trigger")[0][0] >= 50, 180)
        wait_for("the reader to subscribe", lambda: 1 in portal.engine.state.events.subscribed, 120)
        yield deployment, portal, sessions
    finally:
        deployment.stop()
        portal.stop()
        if os.environ.get("BITRIX24_E2E_KEEP") is None:
            shutil.rmtree(home, ignore_errors=True)


REPORT: dict[str, object] = {}


def _gets(portal: SandboxPortal) -> int:
    return portal.stats()["by_method"].get(GET, 0)


def _send(portal, sessions, count: int, start: int, seconds: float) -> tuple[list[int], list[int]]:
    """``count`` messages round-robin over the chats within ``seconds``; every tenth by the operator."""
    clients, refunds = [], []
    for n in range(start, start + count):
        session, line = sessions[n % len(sessions)]
        if n % 10 == 9:
            portal.add_message(session, OPERATOR, f"operator answer {n}")
        else:
            text = f"message {n}: I want a refund" if n % 4 == 0 else f"message {n}: where is my order?"
            message_id = portal.add_message(session, POOL_CLIENT, text)
            clients.append(message_id)
            if line == 2 and n % 4 == 0:
                refunds.append(message_id)
        time.sleep(seconds / count)
    return clients, refunds


def test_200_messages_each_matching_one_once_and_every_event_in_a_run(deployment):
    airflow, portal, sessions = deployment
    clients, refunds = _send(portal, sessions, 200, 0, 10.0)
    wait_for("the unfiltered asset events", lambda: len(airflow.message_ids("b24_all")) >= len(clients), 120)
    wait_for("the per-message asset events", lambda: len(airflow.message_ids("b24_per_message")) >= len(clients), 60)
    time.sleep(3 * INTERVAL)  # nothing more may come
    assert airflow.message_ids("b24_all") == clients
    assert airflow.message_ids("b24_filtered") == refunds
    assert sorted(airflow.message_ids("b24_per_message")) == clients
    assert airflow.message_ids("b24_many") == []

    def all_consumed() -> bool:
        stored, used = airflow.consumed("b24_all")
        return stored == used

    wait_for("every b24_all asset event to reach a DAG run", all_consumed, 90)
    time.sleep(10)  # let the scheduler handle the per-message events as far as it will
    REPORT["batch"] = dict(zip(("stored", "in_runs"), airflow.consumed("b24_all"), strict=True))
    REPORT["per_message"] = dict(zip(("stored", "in_runs"), airflow.consumed("b24_per_message"), strict=True))
    REPORT["messages"] = {"sent": 200, "client": len(clients), "refund_line_2": len(refunds)}


def test_idle_minutes_give_no_event_and_one_get_per_interval_for_50_watchers(deployment):
    airflow, portal, _ = deployment
    events_before = airflow.query("select count(*) from asset_event")[0][0]
    gets_before = _gets(portal)
    time.sleep(IDLE_SECONDS)
    gets = _gets(portal) - gets_before
    assert airflow.query("select count(*) from asset_event")[0][0] == events_before
    assert airflow.query("select count(*) from trigger")[0][0] >= 50
    REPORT["idle"] = {
        "seconds": IDLE_SECONDS,
        "watchers": 50,
        "gets": gets,
        "per_interval": gets / (IDLE_SECONDS / INTERVAL),
    }
    assert IDLE_SECONDS / INTERVAL / 2 <= gets <= IDLE_SECONDS / INTERVAL + 3


def test_triggerer_killed_during_a_burst_loses_nothing(deployment):
    airflow, portal, sessions = deployment
    before = Counter(airflow.message_ids("b24_all"))
    import threading

    sent: dict[str, list[int]] = {}
    sender = threading.Thread(
        target=lambda: sent.update(zip(("clients", "refunds"), _send(portal, sessions, 100, 1000, 8.0), strict=True))
    )
    sender.start()
    time.sleep(4.0)
    airflow.restart("triggerer", signal.SIGKILL)
    sender.join()
    clients = sent["clients"]
    wait_for(
        "every burst message after the restart",
        lambda: set(clients) <= set(airflow.message_ids("b24_all")),
        150,
    )
    time.sleep(3 * INTERVAL)
    after = Counter(airflow.message_ids("b24_all"))
    new = after - before
    duplicates = sorted(i for i, n in new.items() if n > 1)
    assert sorted(new) == clients  # nothing lost, nothing foreign
    assert max(new.values()) <= 2
    # Only the batch of the last unconfirmed poll comes again: a contiguous run of the burst, in order.
    if duplicates:
        first = clients.index(duplicates[0])
        assert clients[first : first + len(duplicates)] == duplicates
    REPORT["kill"] = {"burst": 100, "client_messages": len(clients), "lost": 0, "duplicates": len(duplicates)}
    assert "sandbox-webhook-0000" not in airflow.logs()
    if path := os.environ.get("BITRIX24_E2E_REPORT"):
        Path(path).write_text(json.dumps(REPORT, indent=2))
