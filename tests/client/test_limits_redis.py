"""
The portal's limits shared through a real Redis: one bucket for every process, blocked methods seen by all,
and the per-process fallback when Redis is down.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from airflow_provider_bitrix24.client import limits, parse_connection
from airflow_provider_bitrix24.client.limits import RATE_SAFETY, local_limiter
from airflow_provider_bitrix24.client.limits_redis import RedisLimiter
from tests.helpers import ROOT, set_conn

pytest_plugins = ["tests.redis_server"]

pytestmark = pytest.mark.integration


def _limiter(redis_server, config, namespace: str) -> RedisLimiter:
    import redis
    import redis.asyncio

    kwargs = {"host": redis_server.host, "port": redis_server.port, "password": redis_server.password}
    return RedisLimiter(
        config,
        sync_client=lambda: redis.Redis(**kwargs),
        async_client=lambda: redis.asyncio.Redis(**kwargs),
        where=f"{redis_server.host}:{redis_server.port}",
        namespace=namespace,
        local=local_limiter(config),
    )


def _config(burst: int = 5, per_second: float = 2.0):
    return parse_connection(
        host="https://portal.bitrix24.com/rest/1/fake-webhook-redis-0000/",
        extra={"rate_limit": {"burst": burst, "per_second": per_second}},
    )


@pytest.fixture
def namespace(request) -> str:
    limits.forget_limits()
    return f"test-{request.node.name}-{time.monotonic_ns()}"


def _within(wait: float, slot: float, elapsed: float) -> bool:
    """
    Whether ``wait`` is the wait for a slot ``slot`` seconds after the first booking, as Redis's clock had moved
    on by at most ``elapsed`` (measured around the bookings) when it was booked.
    """
    return slot - elapsed - 0.001 <= wait <= slot + 0.001


def test_two_limiters_share_one_bucket_exactly(redis_server, namespace):
    """Two processes' limiters on one portal: the burst is shared, then one slot per drain interval for all."""
    # A slow drain (one slot per 5.1 s, no reserve kept at this rate): the waits, which shrink by the time spent
    # booking, stay seconds apart however slowly the machine books them.
    config = _config(burst=5, per_second=0.2)
    first, second = _limiter(redis_server, config, namespace), _limiter(redis_server, config, namespace)
    started = time.monotonic()
    waits = [limiter.acquire("profile").wait for limiter in (first, second) * 4]
    elapsed = time.monotonic() - started
    interval = 1 / (0.2 * RATE_SAFETY)
    assert waits[:5] == [0.0] * 5
    slots = [interval, 2 * interval, 3 * interval]
    assert all(_within(w, slot, elapsed) for w, slot in zip(waits[5:], slots, strict=True)), (waits, elapsed)


def test_a_method_blocked_in_one_process_is_blocked_in_all(redis_server, namespace):
    config = _config()
    first, second = _limiter(redis_server, config, namespace), _limiter(redis_server, config, namespace)
    until = time.time() + 30
    first.report_blocked("crm.deal.list", until)
    grant = second.acquire("crm.deal.list")
    assert grant.blocked_until == pytest.approx(until, abs=1.0)
    assert second.blocked_until("crm.deal.list") == pytest.approx(until, abs=1.0)
    assert second.acquire("profile").blocked_until is None  # other methods go on
    assert second.acquire("crm.deal.list", force=True).blocked_until is None


def test_a_503_anywhere_makes_every_process_assume_the_bucket_is_full(redis_server, namespace):
    config = _config(burst=5, per_second=0.2)
    first, second = _limiter(redis_server, config, namespace), _limiter(redis_server, config, namespace)
    started = time.monotonic()
    first.report_rejected()
    wait = second.acquire("profile").wait
    elapsed = time.monotonic() - started
    assert _within(wait, 1 / (0.2 * RATE_SAFETY), elapsed), (wait, elapsed)  # a full bucket: one drain interval


def test_the_asyncio_twin_shares_the_same_bucket(redis_server, namespace):
    config = _config(burst=3, per_second=0.2)
    sync_side = _limiter(redis_server, config, namespace)
    async_side = _limiter(redis_server, config, namespace)

    async def main() -> list[float]:
        return [(await async_side.aacquire("profile")).wait for _ in range(2)]

    started = time.monotonic()
    assert [sync_side.acquire("profile").wait for _ in range(2)] == [0.0, 0.0]
    waits = asyncio.run(main())
    elapsed = time.monotonic() - started
    assert waits[0] == 0.0
    # The fourth booking of a bucket of three: one drain interval (5.1 s) after the first; 0 if not shared.
    assert _within(waits[1], 1 / (0.2 * RATE_SAFETY), elapsed), (waits, elapsed)


def test_redis_down_falls_back_to_the_process_bucket_and_warns_once(caplog, capsys):
    from airflow_provider_bitrix24.hooks._redis import redis_limiter

    config = _config(burst=2, per_second=2.0)
    dead = {"conn_type": "redis", "host": "127.0.0.1", "port": 9, "password": "fake-redis-password-0000"}
    from airflow.models import Connection

    limiter = redis_limiter(config, Connection(conn_id="dead_redis", **dead), "dead_redis")
    waits = [limiter.acquire("profile").wait for _ in range(3)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] > 0  # the local bucket paces instead
    # Airflow 2 logs through the standard logging records; Airflow 3 through structlog, printed to stdout.
    captured = capsys.readouterr()
    records = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    printed = [line for line in captured.out.splitlines() if "unreachable" in line]
    warnings = records or printed
    assert len(warnings) == 1, warnings
    assert "Redis at 127.0.0.1:9 (dead_redis) is unreachable" in warnings[0]
    assert "fake-redis-password-0000" not in caplog.text + captured.out + captured.err


_WORKER = """
import json, sys, time
from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook
hook = Bitrix24Hook(bitrix24_conn_id=sys.argv[1])
hook.client  # build before the start line, so that all workers start together
start = float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
failed = 0
for _ in range(int(sys.argv[2])):
    try:
        hook.call("server.time")
    except Exception as exc:
        failed += 1
        print("FAILED", type(exc).__name__, exc, file=sys.stderr)
print(json.dumps({"failed": failed}))
"""


def _run_workers(conn_id: str, processes: int, calls: int) -> tuple[list[dict], str]:
    start = time.time() + 6.0
    env = os.environ.copy()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, conn_id, str(calls), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    outcomes, output = [], ""
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        output += out + err
        assert worker.returncode == 0, err[-2000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    return outcomes, output


@pytest.mark.parametrize("shared", [True, False])
def test_worker_processes_stay_within_the_portal_limit_only_when_they_share_it(
    sandbox, monkeypatch, redis_server, shared
):
    """
    4 processes x 25 calls against a portal whose burst is 10: the shared bucket draws no 503, per-process ones do.

    At 10 per second the client keeps 4 of the 10 free, so requests may reach the portal up to 0.5 s late (a
    worker process that the machine wakes late), as at a real portal's 2 per second with none kept free.
    """
    sandbox.configure(rate_limit_enabled=True, burst=10, per_second=10.0)
    set_conn(monkeypatch, "redis_limits", redis_server.airflow_conn())
    data = json.loads(sandbox.airflow_conn_json("webhook"))
    data["extra"] = {"rate_limit": {"burst": 10, "per_second": 10.0}, "max_retries": 10}
    if shared:
        data["extra"]["redis_conn_id"] = "redis_limits"
    set_conn(monkeypatch, "b24_workers", data)
    # Each run gets a portal bucket of its own in Redis: the sandbox's port differs per test session only.
    redis_server.command("FLUSHALL")

    outcomes, output = _run_workers("b24_workers", processes=4, calls=25)

    stats = sandbox.stats()
    rejected = stats["errors"].get("QUERY_LIMIT_EXCEEDED", 0)
    assert all(o["failed"] == 0 for o in outcomes), output[-3000:]
    assert redis_server.password not in output
    if shared:
        assert rejected == 0
        assert stats["requests"] == 100
    else:
        assert rejected > 0  # the failure mode the shared limiter removes
