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

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.services import redis_command, start_redis, stop_process

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
        return redis_command(self.host, self.port, self.password, args, timeout)


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
    process, port = start_redis(binary, directory, password, timeout=START_TIMEOUT)
    try:
        yield RedisServer("127.0.0.1", port, password)
    finally:
        stop_process(process)
        shutil.rmtree(directory, ignore_errors=True)
