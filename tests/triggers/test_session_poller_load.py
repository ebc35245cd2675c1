"""
Hundreds of deferred waits in one event loop against one rate-limited portal.

The sandbox runs in its own process here, so that the measured memory and CPU are the triggers' alone, and is
driven through its ``/_sandbox/`` endpoints. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_bitrix24.client import limits
from airflow_provider_bitrix24.sandbox.stats import peak_in_window, refused_by_bucket
from airflow_provider_bitrix24.triggers import _poller
from airflow_provider_bitrix24.triggers.session_history import SessionHistoryTrigger
from tests.conftest import set_conn

POOL = 500
OPERATOR = 2
BURST, PER_SECOND = 50, 2.0  # the standard preset

_PORTAL = """
import json, sys
from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
portal = SandboxPortal(SandboxConfig.preset("standard", extra_sessions=int(sys.argv[1]))).start()
print(json.dumps({"base_url": portal.base_url, "conn": portal.airflow_conn_json("webhook")}), flush=True)
sys.stdin.read()
portal.stop()
"""


@dataclass
class RemotePortal:
    """A sandbox portal in a child process, driven over HTTP."""

    base_url: str
    conn: dict[str, Any]

    def control(self, name: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.base_url}/_sandbox/{name}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def seed(self) -> dict[str, Any]:
        return self.control("seed")

    def stats(self) -> dict[str, Any]:
        return self.control("stats")


@pytest.fixture(scope="module")
def remote_portal() -> Iterator[RemotePortal]:
    process = subprocess.Popen(
        [sys.executable, "-c", _PORTAL, str(POOL)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        yield RemotePortal(info["base_url"], json.loads(info["conn"]))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def portal(remote_portal: RemotePortal) -> RemotePortal:
    remote_portal.control("reset", {})
    limits.forget_limits()
    return remote_portal


def _use(monkeypatch, portal: RemotePortal, burst: int, per_second: float) -> str:
    conn = dict(portal.conn)
    conn["extra"] = {**conn.get("extra", {}), "rate_limit": {"burst": burst, "per_second": per_second}}
    set_conn(monkeypatch, "b24_load", conn)
    return "b24_load"


def _pool_sessions(portal: RemotePortal, count: int) -> tuple[list[int], int]:
    """The first ``count`` pool sessions, and the newest seed message id (pool messages follow the bulk ones)."""
    seed = portal.seed()
    pool = range(seed["extra_session_ids"]["start"], seed["extra_session_ids"]["stop"])
    assert len(pool) >= count
    return list(pool[:count]), seed["bulk_message_ids"]["stop"] - 1 + len(pool)


async def _wait_all(triggers: list[SessionHistoryTrigger], timeout: float) -> list[tuple[dict[str, Any], float]]:
    async def one(trigger: SessionHistoryTrigger) -> tuple[dict[str, Any], float]:
        event = await trigger.run().asend(None)
        return event.payload, time.time()

    return await asyncio.wait_for(asyncio.gather(*(one(t) for t in triggers)), timeout)


def _post_messages(portal: RemotePortal, plan: list[tuple[int, float]]) -> list[float]:
    """Ask the portal to add one operator message per ``(session, delay)``; return when each will appear."""
    appear: list[float] = []
    for session_id, delay in plan:
        before = time.time()
        portal.control("messages", {"session_id": session_id, "author_id": OPERATOR, "text": "On it", "delay": delay})
        appear.append(before + delay)  # the earliest it can appear: latencies below are upper bounds
    return appear


def _warm_up(conn_id: str, session_id: int) -> None:
    """One wait that ends at the first poll, so that imports and first-use caches are not counted per trigger."""
    trigger = SessionHistoryTrigger(bitrix24_conn_id=conn_id, session_id=session_id, poll_interval=1)
    assert asyncio.run(_wait_all([trigger], timeout=30))[0][0]["status"] == "success"


def test_500_triggers_share_batches_under_the_standard_rate_limit(portal, monkeypatch):
    count = POOL
    conn_id = _use(monkeypatch, portal, BURST, PER_SECOND)
    sessions, last_seed = _pool_sessions(portal, count)
    _warm_up(conn_id, sessions[0])
    per_round = math.ceil(count / 50)
    # Poll as often as the limit allows: a round of 10 requests every 5 s is 2 requests/s.
    interval = per_round / PER_SECOND
    triggers = [
        SessionHistoryTrigger(
            bitrix24_conn_id=conn_id,
            session_id=session_id,
            after_message_id=last_seed,
            authors=["operator"],
            poll_interval=interval,
        )
        for session_id in sessions
    ]
    # Messages appear from 2 s after the waits start, spread over two rounds.
    spread = 2 * interval
    plan = [(s, 2.0 + spread * (i % 97) / 97) for i, s in enumerate(sessions)]

    async def scenario():
        waits = asyncio.ensure_future(_wait_all(triggers, timeout=120))
        await asyncio.sleep(0)
        appear = await asyncio.to_thread(_post_messages, portal, plan)
        (poller,) = _poller._pollers.values()
        return await waits, appear, poller.stats

    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    started = time.time()
    results, appear, poller_stats = asyncio.run(scenario())
    finished = time.time()
    peak = tracemalloc.get_traced_memory()[1] - baseline
    tracemalloc.stop()

    assert all(event["status"] == "success" for event, _ in results)
    assert all(len(event["messages"]) == 1 for event, _ in results)
    assert [event["messages"][0]["session_id"] for event, _ in results] == sessions
    assert _poller._pollers == {}

    stats = portal.stats()
    assert poller_stats.requests == stats["requests"] - 1  # the warm-up's request came first
    assert poller_stats.commands == stats["batch_commands"] - 1
    rest = [t for t, method, _ in stats["log"] if started - 1 <= t <= finished + 1]
    assert stats["errors"].get("QUERY_LIMIT_EXCEEDED", 0) == 0
    assert stats["by_status"] == {"200": stats["requests"]}
    assert refused_by_bucket(rest, BURST, PER_SECOND) == 0
    for window in (1.0, 5.0, 10.0, 30.0):
        assert peak_in_window(rest, window) <= BURST + PER_SECOND * window

    latencies = [seen - appeared for (_, seen), appeared in zip(results, appear, strict=True)]
    # Seen at the first poll after it appeared: within one interval plus the time a round of requests takes;
    # the bound checked is two polling rounds.
    assert max(latencies) <= 2 * interval + 1.0, max(latencies)

    duration = finished - started
    requests, commands = poller_stats.requests, poller_stats.commands
    print(
        f"\n{count} triggers, one event loop, poll interval {interval:g} s ({per_round} full batches per round), "
        f"standard limit {PER_SECOND:g} req/s burst {BURST}:\n"
        f"  {requests} requests in {duration:.1f} s = {requests / duration:.2f} req/s; peak {peak_in_window(rest, 1.0)} "
        f"in any 1 s, {peak_in_window(rest, 10.0)} in any 10 s; 0 QUERY_LIMIT_EXCEEDED, 0 refused by the bucket\n"
        f"  {commands} history commands = {commands / requests:.1f} per request, {commands / count:.1f} polls per "
        f"trigger, ~{duration / interval:.1f} rounds\n"
        f"  seen after appearing: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s = "
        f"{max(latencies) / interval:.2f} rounds\n"
        f"  peak traced memory {peak / 1024:.0f} KiB = {peak / count / 1024:.1f} KiB per trigger"
    )


def test_demand_above_the_limit_slows_every_wait_alike(portal, monkeypatch):
    """300 waits polling every 0.2 s ask for 30 requests/s from a portal that allows 4: rounds stretch evenly."""
    burst, per_second, count = 5, 4.0, 300
    portal.control("config", {"burst": burst, "per_second": per_second})
    conn_id = _use(monkeypatch, portal, burst, per_second)
    sessions, last_seed = _pool_sessions(portal, count)
    triggers = [
        SessionHistoryTrigger(
            bitrix24_conn_id=conn_id,
            session_id=session_id,
            after_message_id=last_seed,
            authors=["operator"],
            poll_interval=0.2,
        )
        for session_id in sessions
    ]
    round_time = math.ceil(count / 50) / (per_second * limits.RATE_SAFETY)  # ~1.5 s

    async def scenario():
        waits = asyncio.ensure_future(_wait_all(triggers, timeout=60))
        await asyncio.sleep(4 * round_time)
        (poller,) = _poller._pollers.values()
        # Polls started: those answered, and the one in flight (its answer may come late on a busy machine).
        polls = [s.polls + (s.due == math.inf) for s in poller._subscriptions]
        # Every message appears at the same moment, about one second from now.
        moment = time.time() + 1.0
        appear = await asyncio.to_thread(
            _post_messages, portal, [(s, max(0.0, moment - time.time())) for s in sessions]
        )
        return polls, await waits, appear

    started = time.time()
    polls, results, appear = asyncio.run(scenario())
    finished = time.time()

    assert all(event["status"] == "success" for event, _ in results)
    stats = portal.stats()
    rest = [t for t, _, _ in stats["log"] if started - 1 <= t <= finished + 1]
    assert stats["errors"].get("QUERY_LIMIT_EXCEEDED", 0) == 0
    assert refused_by_bucket(rest, burst, per_second) == 0
    assert peak_in_window(rest, 10.0) <= burst + per_second * 10.0
    # Fair: oldest due first, so no wait was polled more than once more than any other.
    assert max(polls) - min(polls) <= 1, sorted(set(polls))
    assert min(polls) >= 2
    latencies = [seen - appeared for (_, seen), appeared in zip(results, appear, strict=True)]
    # Seen at the first poll after it appeared: within one round plus the time its answer takes (about 1.6 s). The
    # bound checked is three rounds and a second, room for slow answers on a busy machine; a wait passed over for
    # three rounds or more exceeds it (an unfair order shows first in the poll counts checked above).
    assert max(latencies) <= 3 * round_time + 1.0, max(latencies)
    sustained = [t for t in rest if t > started + burst / per_second]
    rate = (len(sustained) - 1) / (sustained[-1] - sustained[0]) if len(sustained) > 1 else 0.0
    print(
        f"\n{count} waits at 0.2 s against {per_second:g} req/s (burst {burst}): {stats['requests']} requests, "
        f"sustained {rate:.2f} req/s, polls per wait after {4 * round_time:.1f} s: {min(polls)}-{max(polls)}, "
        f"max latency {max(latencies):.2f} s (round ~{round_time:.2f} s), QUERY_LIMIT_EXCEEDED 0"
    )
