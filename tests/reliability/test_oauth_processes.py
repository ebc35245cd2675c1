"""
The OAuth chain across real task processes: one refresh token, single-use, shared by processes through the
metadata database's Variable ``bitrix24_oauth__<conn_id>`` (or through Redis, with ``redis_conn_id``).

Every process here is a real ``python`` child (:mod:`tests.support.hook_process`) that makes
``Bitrix24Hook(bitrix24_conn_id=...).call("profile")`` on command, against the canary sandbox portal of the
reliability suite, with the Airflow home (SQLite metadata database) of the test session. The token endpoint is
reached through :class:`~tests.support.slow_proxy.SlowProxy`, which holds every successful grant for three
seconds: processes told to call together have that long to send their first call (with the expired token) before
the winner has its new pair, even on a slow, loaded machine; and when two spend the same refresh token, the loser
hears ``invalid_grant`` before the winner has its new pair, let alone stored it, every time. Everything the
children print goes into the suite's leak scan.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_bitrix24.sandbox import SandboxPortal
from tests.helpers import ROOT, oauth_connection, token_variable
from tests.reliability.canary import LeakScan
from tests.support.airflow_env import deployment_env
from tests.support.hook_process import PREFIX
from tests.support.slow_proxy import SlowProxy

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

#: How long the token endpoint holds a successful grant (see the module docstring).
GRANT_HELD = 3.0
#: Seconds a child may take to import Airflow, or to answer one call.
START_TIMEOUT = 120.0
CALL_TIMEOUT = 120.0

pytest_plugins = ["tests.redis_server"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class HookProcess:
    """One child task process; its ``HOOKPROC`` lines in a queue, all of its output kept for the leak scan."""

    def __init__(self, name: str, conn_id: str, env: dict[str, str], *options: str) -> None:
        self.name = name
        self.output: list[str] = []
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.hook_process", conn_id, *options],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith(PREFIX):
                self._lines.put(json.loads(line[len(PREFIX) :]))

    def _expect(self, event: str, timeout: float, failure: type[Exception]) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise failure(
                f"{self.name} sent no {event!r} within {timeout:g} s; its output ends with:\n"
                + "".join(self.output[-40:])
            ) from None
        if line["event"] != event:
            raise RuntimeError(f"{self.name} sent {line} instead of {event!r}")
        return line

    def ready(self) -> None:
        # A child that cannot even start is a broken harness: RuntimeError, not an assertion about the behaviour.
        self._expect("ready", START_TIMEOUT, RuntimeError)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def result(self) -> dict[str, Any]:
        # A call that never returns is the product's behaviour (a hang), so that one is an assertion.
        return self._expect("call", CALL_TIMEOUT, AssertionError)

    def call(self) -> dict[str, Any]:
        self.send("call")
        return self.result()

    def close(self) -> str:
        if self.process.poll() is None:
            try:
                self.send("exit")
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        return "".join(self.output)


class Scan:
    """The suite's leak scan behind a ``repr`` without secrets: pytest prints a test's arguments when it fails."""

    def __init__(self, scan: LeakScan) -> None:
        self._scan = scan

    def __repr__(self) -> str:
        return "Scan(...)"

    def add(self, origin: str, text: Any) -> None:
        self._scan.add(origin, text)

    def secret(self, value: str | None) -> None:
        self._scan.secret(value)


@pytest.fixture
def scan(leak_scan: LeakScan) -> Scan:
    return Scan(leak_scan)


@contextmanager
def processes(
    scan: Scan, conn_id: str, env: dict[str, str], *names: str, options: tuple[str, ...] = ()
) -> Iterator[list[HookProcess]]:
    """Start one child per name, wait until each is ready, and hand their whole output to the leak scan at the end."""
    started: list[HookProcess] = []
    try:
        for name in names:
            started.append(HookProcess(name, conn_id, env, *options))
        for child in started:
            child.ready()
        yield started
    finally:
        for child in started:
            scan.add(f"{child.name} output", child.close())


def call_together(children: list[HookProcess]) -> list[dict[str, Any]]:
    """Send ``call`` to every child at once, then collect the answers."""
    for child in children:
        child.send("call")
    return [child.result() for child in children]


def stored_pair(conn: dict[str, Any]) -> dict[str, Any] | None:
    """The token pair the hook keeps in the metadata database for the connection's chain."""
    from airflow.models.variable import Variable

    raw = Variable.get(token_variable(conn), default_var=None)
    return json.loads(raw) if raw else None


def delete_stored_pair(conn: dict[str, Any]) -> None:
    from airflow.models.variable import Variable

    Variable.delete(token_variable(conn))


def note_tokens(scan: Scan, *pairs: dict[str, Any] | None) -> None:
    for pair in pairs:
        for key in ("access_token", "refresh_token"):
            if pair and isinstance(pair.get(key), str):
                scan.secret(pair[key])


def failures(results: list[dict[str, Any]]) -> list[str]:
    return [f"{r.get('error_type')}[{r.get('error_code')}]: {r.get('error')}" for r in results if not r["ok"]]


@pytest.fixture
def token_proxy(portal: SandboxPortal) -> Iterator[SlowProxy]:
    with SlowProxy(portal.base_url, success_delay=GRANT_HELD) as proxy:
        yield proxy


def oauth_conn(portal: SandboxPortal, proxy: SlowProxy, scan: Scan, **extra: Any) -> dict[str, Any]:
    """An OAuth connection whose access token has expired, its token endpoint behind ``proxy``."""
    tokens = portal.issue_oauth_tokens(expired=True)
    note_tokens(scan, tokens)
    conn = oauth_connection(portal, tokens)
    conn["extra"].update(oauth_url=proxy.base_url + "/oauth/token/", **extra)
    return conn


def child_env(**connections: dict[str, Any]) -> dict[str, str]:
    env = deployment_env()
    env.update({f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in connections.items()})
    return env


def new_conn_id(label: str) -> str:
    return f"rel_{label}_{uuid.uuid4().hex[:8]}"


# -- (a) two processes refresh at once


def test_two_processes_meeting_expired_token_together_both_succeed(
    portal: SandboxPortal, token_proxy: SlowProxy, scan: Scan, airflow_db: str
) -> None:
    conn_id = new_conn_id("pair")
    conn = oauth_conn(portal, token_proxy, scan)
    env = child_env(**{conn_id: conn})
    with processes(scan, conn_id, env, "process A", "process B", "process C") as (first, second, third):
        results = call_together([first, second])
        stats = portal.stats()
        stored = stored_pair(conn)
        note_tokens(scan, stored)

        assert failures(results) == []
        assert all(r["user"] == "1" for r in results), results
        assert stats["errors"] == {"expired_token": 2}  # both calls met expired_token
        assert stats["oauth_requests"] in (1, 2)
        assert stored is not None

        # The chain is whole: a third process, whose access token has expired too, refreshes with the stored pair.
        portal.expire_access_tokens()
        later = third.call()
    assert later["ok"], failures([later])
    after = portal.stats()
    assert after["oauth_requests"] == stats["oauth_requests"] + 1
    assert after["errors"] == {"expired_token": 3}
    note_tokens(scan, stored_pair(conn))


# -- (b) the rotated pair cannot be stored


def test_a_rotated_pair_that_cannot_be_stored_fails_the_call_loudly(
    portal: SandboxPortal, token_proxy: SlowProxy, scan: Scan, airflow_db: str
) -> None:
    conn_id = new_conn_id("nosave")
    conn = oauth_conn(portal, token_proxy, scan)
    env = child_env(**{conn_id: conn})
    with processes(scan, conn_id, env, "process W", options=("--fail-variable-writes",)) as (child,):
        result = child.call()
    stats = portal.stats()

    assert stats["oauth_requests"] >= 1  # the portal rotated the pair: the connection's refresh token is spent
    assert stored_pair(conn) is None  # and it was not stored
    assert not result["ok"], "the call went on although the new refresh token was lost"
    message = result["error"]
    # Where the new refresh token is needed: the connection (whose id is also in the Variable's name).
    assert conn_id in message, message
    assert "refresh token" in message.lower(), message


# -- (c) credentials replaced under a long-lived process


def _replace_credentials(portal: SandboxPortal, path: Path, conn_id: str, scan: Scan) -> None:
    """What an administrator does after re-authorising the application: a new pair in the connection."""
    portal.reset(keep_config=True)  # every token issued so far is revoked
    tokens = portal.issue_oauth_tokens()
    note_tokens(scan, tokens)
    connections = json.loads(path.read_text())
    connections[conn_id]["extra"].update(refresh_token=tokens["refresh_token"], access_token=tokens["access_token"])
    path.write_text(json.dumps(connections))


@pytest.mark.parametrize(
    "stale_variable",
    [
        pytest.param(
            False,
            id="variable-deleted",
        ),
        pytest.param(
            True,
            id="variable-kept",
        ),
    ],
)
def test_a_long_lived_process_follows_credentials_replaced_in_the_connection(
    portal: SandboxPortal, token_proxy: SlowProxy, scan: Scan, airflow_db: str, tmp_path: Path, stale_variable: bool
) -> None:
    conn_id = new_conn_id("replaced")
    path = tmp_path / "connections.json"
    conn = oauth_conn(portal, token_proxy, scan)
    path.write_text(json.dumps({conn_id: conn}))
    # The connection comes from a secrets backend the administrator edits while the process runs.
    env = child_env()
    env["AIRFLOW__SECRETS__BACKEND"] = "airflow.secrets.local_filesystem.LocalFilesystemBackend"
    env["AIRFLOW__SECRETS__BACKEND_KWARGS"] = json.dumps({"connections_file_path": str(path)})
    with processes(scan, conn_id, env, "long-lived process") as (child,):
        first = child.call()
        assert first["ok"], failures([first])
        rotated = stored_pair(conn)
        assert rotated is not None
        note_tokens(scan, rotated)

        _replace_credentials(portal, path, conn_id, scan)
        if not stale_variable:
            delete_stored_pair(conn)
        later = child.call()

    assert later["ok"], failures([later])
    assert portal.stats()["errors"].get("invalid_token", 0) == 0  # the revoked pair was not even tried


# -- Redis: one refresh for the whole deployment


def test_the_test_redis_requires_its_password(redis_server: RedisServer) -> None:
    import socket

    assert redis_server.command("PING").startswith(b"+PONG")
    with socket.create_connection((redis_server.host, redis_server.port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(1024).startswith(b"-NOAUTH")
    assert redis_server.password not in repr(redis_server)


def test_with_redis_four_processes_meeting_expired_token_refresh_once(
    portal: SandboxPortal, token_proxy: SlowProxy, scan: Scan, airflow_db: str, redis_server: RedisServer
) -> None:
    scan.secret(redis_server.password)
    conn_id = new_conn_id("redis")
    conn = oauth_conn(portal, token_proxy, scan, redis_conn_id="redis_limits")
    env = child_env(**{conn_id: conn, "redis_limits": redis_server.airflow_conn()})
    names = [f"process {n}" for n in range(1, 5)]
    with processes(scan, conn_id, env, *names) as children:
        results = call_together(children)
    outputs = "".join(line for child in children for line in child.output)
    stats = portal.stats()
    note_tokens(scan, stored_pair(conn))

    assert redis_server.password not in outputs
    assert failures(results) == []
    # Every process sent the expired token, unless (on a slow machine) it started after the new pair was stored;
    # at least two met it, so more than one process needed the new pair.
    expired = stats["errors"].get("expired_token", 0)
    assert 2 <= expired <= 4, stats
    assert set(stats["errors"]) == {"expired_token"}
    assert stats["oauth_requests"] == 1
