"""
Shared fixtures.

Airflow is pointed at a throw-away home before it is imported, so tests never touch a real installation. The
sandbox portal runs on a free loopback port for the whole session; each test that uses it gets it reset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import AIRFLOW_HOME, DAGS_FOLDER, ROOT, DagRunResult, load_dag, run_dag, set_conn

__all__ = ["DAGS_FOLDER", "ROOT", "DagRunResult", "load_dag", "run_dag", "set_conn"]


def pytest_configure(config: pytest.Config) -> None:
    DAGS_FOLDER.mkdir(exist_ok=True)
    for source in [*(ROOT / "example_dags").glob("*.py"), *(ROOT / "tests" / "dags").glob("*.py")]:
        shutil.copy(source, DAGS_FOLDER / source.name)
    os.environ["AIRFLOW_HOME"] = AIRFLOW_HOME
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    # One Fernet key for this process and every child it starts, before anything imports Airflow: otherwise the
    # first `airflow db migrate` writes a generated key that only the children read, and Variables they encrypt
    # read back as ciphertext here (Airflow 2).
    os.environ.setdefault(
        "AIRFLOW__CORE__FERNET_KEY", "dGVzdC1vbmx5LWZlcm5ldC1rZXktbm90LXNlY3JldCE="
    )  # test-only-fernet-key-not-secret!
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """An initialised metadata database in the test AIRFLOW_HOME (needed by dag.test())."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def _portal():
    from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal

    portal = SandboxPortal(SandboxConfig.preset("unlimited")).start()
    yield portal
    portal.stop()


@pytest.fixture
def sandbox(_portal):
    """The sandbox portal, reset to its seed data with limits off (tests switch them on as needed)."""
    from airflow_provider_bitrix24.client import limits, oauth

    _portal.reset()
    _portal.configure(rate_limit_enabled=False)
    limits.forget_limits()
    oauth.forget_oauth_sessions()
    yield _portal
    _portal.reset()


@pytest.fixture
def webhook_conn(sandbox, monkeypatch) -> str:
    """``bitrix24_default`` pointing at the sandbox through its inbound-webhook URL."""
    monkeypatch.setenv("AIRFLOW_CONN_BITRIX24_DEFAULT", sandbox.airflow_conn_json("webhook"))
    return "bitrix24_default"


@pytest.fixture
def logs(caplog, capsys):
    """All log output of a test: stdlib records (Airflow 2) and structlog lines on stdout (Airflow 3)."""
    import logging

    caplog.set_level(logging.DEBUG)

    def read() -> str:
        captured = capsys.readouterr()
        return caplog.text + captured.out + captured.err

    return read


@pytest.fixture
def fast_retries(monkeypatch):
    """Make every client built during the test retry after milliseconds instead of seconds.

    ``server_cutoff`` stands for the portal's 60 s execution cut-off, scaled down like the rest.
    """
    import functools

    from airflow_provider_bitrix24.client import core
    from airflow_provider_bitrix24.client.retry import RetryPolicy

    policy = functools.partial(RetryPolicy, base_delay=0.01, max_delay=0.05, jitter=0.0, server_cutoff=2.5)
    monkeypatch.setattr(core, "RetryPolicy", policy)
    return policy
