"""
A triggerer full of OAuth waits keeps its event loop running when the access token expires mid-wait.

120 real ``SessionHistoryTrigger``s with mixed poll intervals run in one event loop of a child process, each as a
task of the real Airflow 3 ``TriggerRunner.run_trigger``, with the Variable store and ``mask_secret`` going through
the real ``TriggerCommsDecoder`` to a stand-in supervisor (:mod:`tests.support.triggerer`). Once every session was
polled with the first access token, the sandbox expires it, and each session gets its awaited message shortly
after. The token endpoint sits behind a proxy that answers 3 s late, as a far or busy one does. Every wait must
end with its message, the token endpoint must see one refresh, the rotated pair must be stored in the Variable and
work, and a heartbeat coroutine in the loop must never be held up for more than 1.5 s from the expiry on: half the
token request, which a loop held across it would be stalled for.

On Airflow 2 (no supervisor comms) the same triggers run in one loop and keep the Variable in the metadata
database: the comms deadlock cannot happen there, a loop blocked for the length of the token request can.

The child gives up by itself at a deadline (a frozen loop cannot stop itself), and reports the stall it measured
and the stacks of its threads.
"""

from __future__ import annotations

import importlib.metadata
import json
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import ROOT, oauth_connection, token_variable
from tests.support.airflow_env import deployment_env
from tests.support.slow_proxy import SlowProxy
from tests.support.triggerer import PREFIX

#: Airflow 3 triggers reach Variables through the supervisor comms; Airflow 2 ones read the metadata database.
HAS_SUPERVISOR_COMMS = int(importlib.metadata.version("apache-airflow").split(".")[0]) >= 3

TRIGGERS = 120
INTERVALS = (0.2, 0.35, 0.5, 0.8)
OPERATOR = SEED.operator_ids[0]
CLIENT = SEED.client_user_ids[0]
CLASSPATH = "airflow_provider_bitrix24.triggers.session_history.SessionHistoryTrigger"
#: The token endpoint answers this much later than the sandbox would: a slow moment of ``oauth.bitrix.info``,
#: twice the stall allowed, so that holding anything the loop needs across the token request shows, and a busy
#: machine's scheduling delays (tenths of a second) do not.
TOKEN_LATENCY = 3.0
#: What each Variable / Connection call costs the stand-in supervisor (its round trip to the API server).
API_DELAY = 0.005
#: Seconds the child waits, once its triggers run, before it gives up on a frozen loop.
DEADLINE = 20.0
#: The longest the heartbeat may be held up from the expiry on.
MAX_STALL = 1.5

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def portal() -> Iterator[SandboxPortal]:
    config = SandboxConfig.preset("unlimited", extra_sessions=TRIGGERS, bulk_messages=100)
    with SandboxPortal(config) as started:
        yield started


class Child:
    """The triggerer child process: its ``TRIGGERER`` lines in a queue, everything else kept for the report."""

    def __init__(self, config_path: Path, env: dict[str, str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self.other: list[str] = []
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        with stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.triggerer", str(config_path)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(PREFIX):
                self.lines.put(json.loads(line[len(PREFIX) :]))
            else:
                self.other.append(line)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """
        The next ``event`` line. A child that crashed or stayed silent is a broken harness, not the behaviour under
        test (a frozen loop still reports, through the watchdog): that raises ``RuntimeError``, which the xfail
        marker does not swallow.
        """
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"the triggerer child sent no {event!r} within {timeout:g} s{self.tail()}") from None
            if line.get("event") == "crashed":
                raise RuntimeError(f"the triggerer child crashed:\n{line['error']}")
            if line.get("event") == event:
                return line

    def tail(self) -> str:
        err = self.stderr_path.read_text(errors="replace")[-3000:]
        return f"\n--- child stdout (tail)\n{''.join(x for x in self.other if 'starting' not in x and 'Waiting for' not in x and 'completed' not in x)[:6000]}\n--- child stderr (tail)\n{err}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self._reader.join(timeout=5)


def _refresh_with(portal: SandboxPortal, refresh_token: str) -> int:
    """Ask the token endpoint for a new pair with ``refresh_token``; its HTTP status."""
    query = urllib.parse.urlencode(
        {
            "grant_type": "refresh_token",
            "client_id": portal.oauth_client_id,
            "client_secret": portal.oauth_client_secret,
            "refresh_token": refresh_token,
        }
    )
    try:
        with urllib.request.urlopen(f"{portal.oauth_url}?{query}", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _wait_until(condition: Any, timeout: float, what: str, child: Child) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}{child.tail()}")
        time.sleep(0.02)


def test_expired_token_mid_wait_refreshes_once_without_stalling_the_triggerer_loop(
    portal: SandboxPortal, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not HAS_SUPERVISOR_COMMS:
        request.getfixturevalue("airflow_db")  # Airflow 2 triggers keep the Variable in the metadata database
    conn_id = f"b24_stall_{uuid.uuid4().hex[:8]}"
    portal.reset()
    sessions = list(portal.seed.extra_session_ids)[:TRIGGERS]
    assert len(sessions) == TRIGGERS
    baseline = portal.add_message(SEED.support_session_id, CLIENT, "before the waits")
    tokens = portal.issue_oauth_tokens()
    triggers = [
        {
            "classpath": CLASSPATH,
            "kwargs": {
                "bitrix24_conn_id": conn_id,
                "session_id": session_id,
                "after_message_id": baseline,
                "authors": ["operator"],
                "poll_interval": INTERVALS[number % len(INTERVALS)],
            },
        }
        for number, session_id in enumerate(sessions)
    ]
    with SlowProxy(portal.base_url, delay=TOKEN_LATENCY) as proxy:
        conn = oauth_connection(portal, tokens)
        conn["extra"]["oauth_url"] = proxy.base_url + "/oauth/token/"
        variable = token_variable(conn)
        conn["extra"]["rate_limit"] = {"burst": 1000, "per_second": 200}
        config_path = tmp_path / "triggerer.json"
        config_path.write_text(
            json.dumps(
                {
                    "triggers": triggers,
                    "deadline": DEADLINE,
                    "api_delay": API_DELAY,
                    "variables": {},
                    "connections": {conn_id: conn},
                    "sync_interval": 0.25,
                }
            )
        )
        env = {**deployment_env(), f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}
        child = Child(config_path, env, tmp_path / "stderr.txt")
        try:
            child.expect("started", timeout=180)
            # Every session polled once with the first token before it expires: the expiry hits waits in progress.
            _wait_until(
                lambda: portal.stats()["batch_commands"] >= TRIGGERS, 60, "the first poll of every session", child
            )
            assert portal.stats()["errors"] == {}
            portal.expire_access_tokens()
            expired_at = time.time()
            for number, session_id in enumerate(sessions):
                portal.add_message(session_id, OPERATOR, "On it", delay=0.2 + 1.2 * number / TRIGGERS)
            result = child.expect("result", timeout=DEADLINE + 60)
        finally:
            child.stop()
    oauth_requests = portal.stats()["oauth_requests"]

    events = result["events"]
    successes = [tid for tid, event in events.items() if isinstance(event, dict) and event.get("status") == "success"]
    heartbeat = result["heartbeat"]
    stall_after_expiry = max(
        [gap for at, gap in heartbeat["notable"] if at + gap >= expired_at]
        + [heartbeat["frozen_for"] if not result["completed"] else 0.0]
    )
    summary = (
        f"completed={result['completed']} after {result['elapsed']:.1f} s, {len(successes)}/{TRIGGERS} waits "
        f"succeeded, {oauth_requests} token request(s), longest loop stall {heartbeat['max_stall']:.3f} s "
        f"({stall_after_expiry:.3f} s after the expiry; {heartbeat['beats']} beats), "
        f"supervisor requests {result.get('supervisor', {}).get('requests', 'n/a (Airflow 2)')}"
    )
    print("\n" + summary)
    detail = summary
    if "stacks" in result:
        detail += "\nstacks of the frozen child:\n" + json.dumps(result["stacks"], indent=1)

    if result.get("supervisor", {}).get("errors"):
        raise RuntimeError(f"the stand-in supervisor could not answer: {result['supervisor']['errors']}")
    assert result["completed"], detail
    assert sorted(map(int, successes)) == list(range(1, TRIGGERS + 1)), detail
    for tid, event in events.items():
        assert event["message_ids"], (tid, event)
        assert all(i > baseline for i in event["message_ids"]), (tid, event)
    assert result["failures"] == {}, result["failures"]
    # From the expiry on: the start (first client, first polls) is not what this test is about.
    assert stall_after_expiry <= MAX_STALL, detail
    assert oauth_requests == 1, detail
    if HAS_SUPERVISOR_COMMS:
        raw = result["supervisor"]["variables"].get(variable)
    else:
        from airflow.models.variable import Variable

        raw = Variable.get(variable, default_var=None)
    assert raw, f"the rotated pair is not in Variable {variable}"
    stored = json.loads(raw)
    assert stored["refresh_token"] != tokens["refresh_token"]
    # The chain in the Variable is the live one: its refresh token is accepted.
    assert _refresh_with(portal, stored["refresh_token"]) == 200
