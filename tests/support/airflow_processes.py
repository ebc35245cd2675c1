"""
The Airflow process harness of the end-to-end tests: Airflow components started as child processes of the test,
each in its own session and with its own log in the deployment's home, stopped together at the end.

``tests/e2e`` (LocalExecutor, SQLite) and ``tests/e2e_celery`` (CeleryExecutor, PostgreSQL) subclass
:class:`AirflowProcesses` with their components and their way of reading the metadata database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class AirflowProcesses:
    """Airflow components of one deployment in ``home``, run with ``env``."""

    #: Seconds an ``airflow`` command may take by default.
    cli_timeout: float = 120

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def cli(self, *args: str, timeout: float | None = None) -> str:
        """Run ``airflow <args>`` to its end and return its output; a failure fails the test with the output's tail."""
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout if timeout is not None else self.cli_timeout,
        )
        assert proc.returncode == 0, (
            f"airflow {' '.join(args[:2])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        return proc.stdout

    def launch(self, components: dict[str, list[str]]) -> None:
        """Start ``airflow <args>`` for each component, logging to ``<home>/<name>.log``."""
        for name, args in components.items():
            log = (self.home / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """SIGTERM every component's process group; SIGKILL what is still running 30 s later."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def alive(self) -> None:
        """Fail when a component has exited."""
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"Airflow components exited: {dead}; see logs in {self.home}"

    def logs(self) -> str:
        """Every component's log and every task's log, as one text."""
        texts = [p.read_text(errors="replace") for p in self.home.glob("*.log")]
        texts += [p.read_text(errors="replace") for p in (self.home / "logs").rglob("*") if p.is_file()]
        return "\n".join(texts)


def local_deployment_env(home: Path, api_port: int, conn_json: str, **extra: str) -> dict[str, str]:
    """
    The environment of an Airflow 3 LocalExecutor deployment on loopback: ``home`` as AIRFLOW_HOME with its
    ``dags`` folder, the api-server on ``api_port``, fast heartbeats, ``bitrix24_default`` from ``conn_json``;
    ``extra`` adds or overrides variables.
    """
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API_AUTH__JWT_SECRET": "e2e-jwt-secret-not-for-production-0000",
        "AIRFLOW__API__SECRET_KEY": "e2e-secret-key-not-for-production",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW_CONN_BITRIX24_DEFAULT": conn_json,
        "NO_PROXY": "127.0.0.1,localhost,::1",
        **extra,
    }
    env.pop("BITRIX24_TEST_AIRFLOW_HOME", None)
    return env


def api_healthy(deployment: AirflowProcesses, api_port: int) -> bool:
    """Whether the deployment's api-server answers its health check (raises if a process of it died)."""
    import urllib.request

    deployment.alive()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
