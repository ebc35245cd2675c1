"""The control endpoints refuse what a web page could send through a developer's browser, and bound their input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from airflow_provider_bitrix24.sandbox import SandboxConfig
from airflow_provider_bitrix24.sandbox.config import MAX_BULK_MESSAGES
from airflow_provider_bitrix24.sandbox.server import MAX_CONTROL_BODY

WRITE = {"overloaded": True}


def _config(http, portal, *, headers=None, data=None, payload=WRITE):
    url = f"{portal.base_url}/_sandbox/config"
    if data is not None:
        return http.post(url, data=data, headers=headers or {})
    return http.post(url, json=payload, headers=headers or {})


def _refused(response, status=403):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}", "10.0.0.1:{port}", "[::2]:{port}"]
)
def test_a_request_to_a_foreign_host_name_is_refused(http, portal, host):
    headers = {"Host": host.format(port=portal.config.port)}
    _refused(_config(http, portal, headers=headers))
    _refused(http.get(f"{portal.base_url}/_sandbox/stats", headers=headers))
    assert portal.config.overloaded is False


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "127.0.0.1"])
def test_loopback_host_names_are_accepted(http, portal, host):
    response = _config(http, portal, headers={"Host": host.format(port=portal.config.port)})
    assert response.json() == {"ok": True}
    assert portal.config.overloaded is True


def test_a_request_without_a_host_header_is_refused(portal):
    with socket.create_connection(("127.0.0.1", portal.config.port), timeout=10) as sock:
        sock.sendall(b"POST /_sandbox/reset HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"loopback host" in answer


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1:{port}", "http://localhost"]
)
def test_a_cross_origin_write_is_refused(http, portal, origin):
    _refused(_config(http, portal, headers={"Origin": origin.format(port=portal.config.port)}))
    assert portal.config.overloaded is False


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}", "http://[::1]:{port}"])
def test_a_write_from_the_sandboxs_own_origin_is_accepted(http, portal, origin):
    assert _config(http, portal, headers={"Origin": origin.format(port=portal.config.port)}).json() == {"ok": True}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_a_write_whose_body_is_not_json_is_refused(http, portal, content_type):
    # text/plain, form and multipart are what a browser sends cross-origin without a preflight.
    headers = {} if content_type is None else {"Content-Type": content_type}
    _refused(_config(http, portal, headers=headers, data=json.dumps(WRITE).encode()))
    assert portal.config.overloaded is False


def test_json_bodies_with_a_charset_and_empty_posts_are_accepted(http, portal):
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert _config(http, portal, headers=headers, data=json.dumps(WRITE).encode()).json() == {"ok": True}
    assert http.post(f"{portal.base_url}/_sandbox/reset").json() == {"ok": True}
    assert portal.config.overloaded is False


def test_reads_from_another_origin_still_need_a_loopback_host(http, portal):
    # A browser cannot read the answer of a cross-origin GET (no CORS headers); the Host check stops rebinding.
    response = http.get(f"{portal.base_url}/_sandbox/health", headers={"Origin": "http://evil.example"})
    assert response.json() == {"ok": True}
    assert "Access-Control-Allow-Origin" not in response.headers


def test_control_bodies_are_bounded(http, portal):
    big = json.dumps({"text": "x" * MAX_CONTROL_BODY}).encode()
    response = http.post(f"{portal.base_url}/_sandbox/messages", data=big, headers={"Content-Type": "application/json"})
    _refused(response, 413)
    assert str(MAX_CONTROL_BODY) in response.json()["error"]
    assert "Connection" not in response.headers  # the body was read to its end: the connection stays usable

    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    _refused(
        http.post(f"{portal.base_url}/_sandbox/config", data=chunks(), headers={"Content-Type": "application/json"}),
        413,
    )
    assert http.get(f"{portal.base_url}/_sandbox/health").json() == {"ok": True}
    assert portal.stats()["requests"] == 0


def test_a_body_far_beyond_the_bound_is_not_read(portal):
    with socket.create_connection(("127.0.0.1", portal.config.port), timeout=10) as sock:
        head = "POST /_sandbox/config HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {100 * MAX_CONTROL_BODY}\r\n\r\n".encode() + b"{")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer


def test_the_bulk_message_option_is_bounded(http, portal):
    response = _config(http, portal, payload={"bulk_messages": MAX_BULK_MESSAGES + 1})
    _refused(response, 400)
    assert "bulk_messages must be between 0 and 100000" in response.json()["error"]
    _refused(_config(http, portal, payload={"extra_sessions": 10**12}), 400)
    _refused(_config(http, portal, payload={"bulk_messages": -1}), 400)
    assert portal.config.bulk_messages == 300
    assert _config(http, portal, payload={"bulk_messages": 20}).json() == {"ok": True}
    with pytest.raises(ValueError, match="bulk_messages must be between"):
        SandboxConfig(bulk_messages=10**9)


def test_the_cli_refuses_an_oversized_pool():
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_bitrix24.sandbox", "--extra-sessions", "100000000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "extra_sessions must be between 0 and 100000" in proc.stderr


def test_other_verbs_are_refused_without_reading_the_body(http, portal):
    response = http.put(f"{portal.base_url}/_sandbox/config", data=b"x" * 10_000_000)
    assert response.status_code == 405
    assert portal.config.overloaded is False
