"""
Run the example DAGs end to end against a sandbox portal: ``python -m airflow_provider_bitrix24.sandbox.demo``.

Starts the sandbox on a free loopback port, points ``bitrix24_default`` at it, runs each example DAG with
``airflow dags test`` in a throw-away Airflow home, shows what the portal holds afterwards, and stops the
sandbox. Exits non-zero when a DAG run fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal

ROOT = Path(__file__).resolve().parents[2]


HISTORY = "imopenlines.session.history.get"


def _no_setup(portal: SandboxPortal) -> None:
    return None


def _conversation(portal: SandboxPortal) -> None:
    """Once the sensor has looked at session 335, the client writes and an operator replies."""
    before = portal.stats()["by_method"].get(HISTORY, 0)

    def talk() -> None:
        deadline = time.monotonic() + 120
        while portal.stats()["by_method"].get(HISTORY, 0) <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        portal.add_message(335, 101, "Hi! The Observers button is missing in the mobile app.")
        portal.add_message(335, 2, "Update the app, then tap ... in the task and choose Observers.", delay=2)

    threading.Thread(target=talk, name="demo-conversation", daemon=True).start()


#: The example DAGs the demo runs, in order, with what the portal must do for each.
DEMO_DAGS: list[tuple[str, Callable[[SandboxPortal], None]]] = [
    ("example_bitrix24_hook", _no_setup),
    ("example_bitrix24_quick_answer", _no_setup),
    ("example_bitrix24_quick_answer_list", _no_setup),
    ("example_bitrix24_session_sensor", _conversation),
    ("example_bitrix24_taskflow", _no_setup),
    ("example_bitrix24_notifier", _no_setup),
    ("example_bitrix24_generic", _no_setup),
]


def _airflow(args: list[str], env: dict[str, str], log: Path) -> int:
    with log.open("w") as out:
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", default=str(ROOT / ".demo"), help="working directory for Airflow and logs")
    parser.add_argument("--dags-folder", default=str(ROOT / "example_dags"))
    parser.add_argument("--dag", action="append", help="run only these DAG ids")
    args = parser.parse_args(argv)

    home = Path(args.home)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    portal = SandboxPortal(SandboxConfig.preset("standard")).start()
    try:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": args.dags_folder,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW_CONN_BITRIX24_DEFAULT": portal.airflow_conn_json("webhook"),
            "NO_PROXY": "127.0.0.1,localhost,::1",
        }
        print(f"Sandbox portal: {portal.base_url} (webhook user {portal.webhook_user_id}, standard limits)")
        print("Preparing the Airflow metadata database ...", flush=True)
        if _airflow(["db", "migrate"], env, home / "logs" / "db-migrate.log") != 0:
            print(f"airflow db migrate failed; see {home / 'logs' / 'db-migrate.log'}")
            return 1
        failed = []
        for dag_id, setup in DEMO_DAGS:
            if args.dag and dag_id not in args.dag:
                continue
            setup(portal)
            log = home / "logs" / f"{dag_id}.log"
            started = time.monotonic()
            code = _airflow(["dags", "test", dag_id], env, log)
            verdict = "success" if code == 0 else f"FAILED (exit {code})"
            print(f"  {dag_id}: {verdict} in {time.monotonic() - started:.1f} s (log: {log})", flush=True)
            if code != 0:
                failed.append(dag_id)
        stats = portal.stats()
        answers = portal.quick_answers()
        print(f"Portal saw {stats['requests']} REST requests; status counts {stats['by_status']}")
        print(f"Quick answers on the portal: {len(answers)}")
        for answer in answers[:10]:
            print(f"  #{answer['id']} from message {answer['message_id']}: {answer['name'][:60]!r}")
        alerts = portal.chat_messages(1900)[2:]
        print(f"Messages posted into chat 1900 (Support team): {len(alerts)}")
        for message in alerts[:10]:
            print(f"  #{message['id']}: {message['text'].splitlines()[0][:80]!r}")
        if failed:
            print(f"Demo failed: {', '.join(failed)}")
            return 1
        print("Demo finished: every DAG run succeeded.")
        return 0
    finally:
        portal.stop()


if __name__ == "__main__":
    sys.exit(main())
