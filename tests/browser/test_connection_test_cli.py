"""
``airflow connections test`` on an OAuth connection must leave it usable for the tasks that come after.

Testing refreshes an expired access token, and Bitrix24 rotates the refresh token on every refresh: the new pair
must land where the next process looks for it, or the stored connection's refresh token is dead from then on.
The UI's Test button, which Airflow runs under a random connection id, is checked in
``test_connection_form.py`` (``make browser``); this CLI check needs no browser and runs in the fast suite, on
Airflow 3 and Airflow 2.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import oauth_connection, run_dag, set_conn

CONN_ID = "bitrix24_cli_oauth_test"


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def stored_oauth_connection(sandbox, airflow_db, monkeypatch):
    """An OAuth connection (from the environment, as a secrets backend holds it) whose access token has expired."""
    from airflow.configuration import conf

    tokens = sandbox.issue_oauth_tokens(expired=True)
    set_conn(monkeypatch, CONN_ID, oauth_connection(sandbox, tokens))
    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    # The CLI must encrypt Variables with the key this process decrypts them with: depending on whether Airflow
    # was imported here before airflow.cfg was written, this process may have none while the file has one.
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", conf.get("core", "fernet_key", fallback="") or "")
    return tokens


def test_cli_connection_test_leaves_the_oauth_connection_usable(sandbox, stored_oauth_connection, monkeypatch):
    tokens = stored_oauth_connection
    tested = subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "test", CONN_ID],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = tested.stdout + tested.stderr
    assert tested.returncode == 0, output[-3000:]
    assert "Connection success!" in output
    assert sandbox.stats()["oauth_requests"] >= 1  # the expired access token was refreshed, the chain rotated
    for secret in (tokens["refresh_token"], tokens["access_token"], sandbox.oauth_client_secret):
        assert secret not in output

    # Real tasks afterwards, in this process (nothing shared with the CLI's): the example hook DAG, on the same
    # stored connection, checks it and reads a chat.
    monkeypatch.setenv("BITRIX24_CONN_ID", CONN_ID)
    result = run_dag("example_bitrix24_hook")
    assert result.state == "success", result.tasks
    assert result.xcoms["check_connection"].startswith("Connected to ")
