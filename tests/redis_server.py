"""
A real ``redis-server`` for the tests that share state through Redis: the session-scoped ``redis_server`` fixture.

The server listens on 127.0.0.1 on a free port, requires a password (given in a config file, never on the command
line where ``ps`` would show it), keeps nothing on disk (``--save '' --appendonly no``) and works in a temporary
directory; it is stopped at the end of the session. Without the ``redis-server`` binary (Debian:
``apt-get install -y redis-server``) the tests that use it are skipped, unless ``BITRIX24_REQUIRE_REDIS=1`` makes
that a failure.

Use it from a test module with ``pytest_plugins = ["tests.redis_server"]``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import free_port

#: Seconds to wait for the server to answer PING after it was started.
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class RedisServer:
    """Where the test Redis listens and its password (kept out of ``repr``)."""

    host: str
    port: int
    password: str = field(repr=False)

    @property
    def url(self) -> str:
        """``redis://:PASSWORD@HOST:PORT/0``: holds the password, never print it."""
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def airflow_conn(self) -> dict[str, Any]:
        """An Airflow connection of type ``redis`` to this server (for ``AIRFLOW_CONN_<ID>``)."""
        return {"conn_type": "redis", "host": self.host, "port": self.port, "password": self.password}

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        """Run one command (after ``AUTH``) and return the raw RESP reply to it."""
        return _command(self.host, self.port, self.password, args, timeout)


def _encode(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _command(host: str, port: int, password: str, args: tuple[str, ...], timeout: float) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_encode("AUTH", password) + _encode(*args))
        reply = b""
        while reply.count(b"\r\n") < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    auth, _, rest = reply.partition(b"\r\n")
    if auth != b"+OK":
        raise ConnectionError(f"Redis refused AUTH: {auth[:80]!r}")
    return rest


def _start(binary: str, directory: Path, password: str) -> tuple[subprocess.Popen[bytes], int]:
    config = directory / "redis.conf"
    config.write_text(f"requirepass {password}\n")
    config.chmod(0o600)
    last_error = ""
    for _ in range(3):  # another process may take the free port between the check and the bind
        port = free_port()
        log_path = directory / "redis.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    binary,
                    str(config),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(directory),
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "yes",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError):
                if _command("127.0.0.1", port, password, ("PING",), 1.0).startswith(b"+PONG"):
                    return process, port
            time.sleep(0.05)
        _stop(process)
        last_error = log_path.read_text(errors="replace")[-2000:].replace(password, "***")
    raise RuntimeError(f"redis-server did not start:\n{last_error}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on 127.0.0.1 with a password, for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (Debian: apt-get install -y redis-server)"
        if os.environ.get("BITRIX24_REQUIRE_REDIS") == "1":
            pytest.fail(f"{message}, and BITRIX24_REQUIRE_REDIS=1")
        pytest.skip(message)
    directory = tmp_path_factory.mktemp("redis")
    password = secrets.token_urlsafe(24)
    process, port = _start(binary, directory, password)
    try:
        yield RedisServer("127.0.0.1", port, password)
    finally:
        _stop(process)
        shutil.rmtree(directory, ignore_errors=True)
