"""The ``bitrix24-sandbox`` command, run as a real process."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import requests


def _wait_for(path, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    out, err = proc.communicate(timeout=5)
    pytest.fail(f"the sandbox did not start: {out}{err}")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_prints_the_connection_and_stops_on_signal(tmp_path, stop_signal):
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "airflow_provider_bitrix24.sandbox", "--port", "0", "--port-file", str(port_file),
            "--burst", "7", "--per-second", "3", "--extra-sessions", "2", "--latency", "realistic", "--verbose",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        port = _wait_for(port_file, proc)
        with requests.Session() as http:
            http.trust_env = False
            profile = http.post(f"http://127.0.0.1:{port}/rest/1/sandbox-webhook-0000/profile", timeout=5)
            assert profile.json()["result"]["ID"] == "1"
            # The realistic latency preset: per-request overhead plus the method's processing.
            assert profile.json()["time"]["duration"] >= 0.052 + 0.0045
            history = http.post(
                f"http://127.0.0.1:{port}/rest/1/sandbox-webhook-0000/imopenlines.session.history.get",
                json={"SESSION_ID": 10002},
                timeout=5,
            )
            assert history.json()["result"]["chatId"] == 20002
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert f"Webhook URL: http://127.0.0.1:{port}/rest/1/sandbox-webhook-0000/" in out
    match = re.search(r"^AIRFLOW_CONN_BITRIX24_DEFAULT='(.*)'$", out, re.MULTILINE)
    assert match, out
    conn = json.loads(match.group(1))
    assert conn["host"] == f"http://127.0.0.1:{port}/rest/1/sandbox-webhook-0000/"
    assert conn["extra"]["rate_limit"] == {"burst": 7, "per_second": 3.0}
    assert "POST /rest/1/***/profile -> 200" in err
    assert "sandbox-webhook-0000" not in err


def test_cli_rejects_unknown_presets():
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_bitrix24.sandbox", "--preset", "gold"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.com"])
def test_sandbox_refuses_to_listen_beyond_loopback(host):
    from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal

    with pytest.raises(ValueError, match="not a loopback address"):
        SandboxPortal(SandboxConfig(host=host)).start()
