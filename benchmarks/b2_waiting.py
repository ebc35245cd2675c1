"""
B2: M sensors waiting for an operator's reply, each in its own session, on one standard-plan portal.

Two ways to wait, each run in one worker process with one event loop (a triggerer):

``shared``
    M ``SessionHistoryTrigger`` instances of this provider: one poller per connection packs the due polls into
    ``batch`` requests of 50 and paces them to the portal's rate limit;
``independent``
    M independent pollers, each a copy of ``HttpSensorTrigger.run``'s loop (a new ``aiohttp`` session and an
    ``HttpAsyncHook.run`` per poll, an immediate new try after an error other than 404, a sleep of the poke
    interval otherwise) plus the content check a ``response_check`` would do. ``HttpSensor`` itself cannot defer
    with a ``response_check``, and ``HttpSensorTrigger`` alone fires on any 200, so this is the closest a
    deferrable generic-HTTP wait gets.

Every wait polls every ``interval`` seconds. Once all waits are running, the runner makes one operator message
appear in each session, spread over two polling intervals starting 2 s later, and the worker records when each
wait saw its message. Figures: requests per second at the portal against its limit, 503s, seconds from a
message's appearance to its wait's event, peak RSS growth of the worker per wait.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from airflow_provider_bitrix24.sandbox.stats import peak_in_window
from benchmarks.common import (
    BURST,
    HISTORY,
    PER_SECOND,
    BenchPortal,
    emit,
    log,
    percentile,
    refused_by_bucket,
    run_worker,
    worker_env,
)

B24_CONN = "bench_b2"
HTTP_CONN = "bench_b2_http"
OPERATOR = 2


class _RssSampler:
    """Highest resident set size of this process, sampled every 50 ms."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.baseline = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


async def _shared(sessions: list[int], after: int, author: str, interval: float) -> dict[int, tuple[str, float]]:
    from airflow_provider_bitrix24.triggers.session_history import SessionHistoryTrigger

    async def one(session_id: int) -> tuple[int, str, float]:
        trigger = SessionHistoryTrigger(
            bitrix24_conn_id=B24_CONN,
            session_id=session_id,
            after_message_id=after,
            authors=[author],
            poll_interval=interval,
        )
        event = await trigger.run().asend(None)
        return session_id, event.payload["status"], time.time()

    return await _gather(one, sessions)


async def _independent(
    sessions: list[int], after: int, author: str, interval: float, user: int, code: str
) -> dict[int, tuple[str, float]]:
    import aiohttp
    from airflow.providers.common.compat.sdk import AirflowException
    from airflow.providers.http.hooks.http import HttpAsyncHook

    from airflow_provider_bitrix24.history import HistoryFilter, extract_messages

    wanted = HistoryFilter.build(after_message_id=after, author=[author])
    endpoint = f"rest/{user}/{code}/{HISTORY}"

    async def one(session_id: int) -> tuple[int, str, float]:
        hook = HttpAsyncHook(method="POST", http_conn_id=HTTP_CONN)
        while True:
            try:
                async with aiohttp.ClientSession() as session:
                    response = await hook.run(session=session, endpoint=endpoint, json={"SESSION_ID": session_id})
                    payload = await response.json()
                if wanted.is_met(wanted.match(extract_messages(payload.get("result")))):
                    return session_id, "success", time.time()
                await asyncio.sleep(interval)
            except AirflowException as exc:
                if str(exc).startswith("404"):
                    await asyncio.sleep(interval)

    return await _gather(one, sessions)


async def _gather(one: Any, sessions: list[int]) -> dict[int, tuple[str, float]]:
    """Run one wait per session; the returned dict fills in as waits end (a wait that raised counts as failed)."""

    async def record(session_id: int) -> None:
        try:
            _, status, seen = await one(session_id)
        except Exception as exc:
            status, seen = f"error: {type(exc).__name__}", time.time()
        DONE[session_id] = (status, seen)

    tasks = [asyncio.ensure_future(record(s)) for s in sessions]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return DONE


#: Outcome of every wait that ended so far: session id -> (status, time seen).
DONE: dict[int, tuple[str, float]] = {}


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("shared", "independent"), required=True)
    parser.add_argument("--first-session", type=int, required=True)
    parser.add_argument("--m", type=int, required=True)
    parser.add_argument("--after", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--deadline", type=float, required=True, help="seconds after start to give up")
    parser.add_argument("--user", type=int, required=True)
    parser.add_argument("--code", required=True)
    args = parser.parse_args(argv)
    sessions = list(range(args.first_session, args.first_session + args.m))

    def scenario(targets: list[int], after: int, author: str = "operator") -> Any:
        if args.mode == "shared":
            return _shared(targets, after, author, args.interval)
        return _independent(targets, after, author, args.interval, args.user, args.code)

    # One wait that ends at its first poll: imports, connection lookup and first-use caches are not counted.
    warm = asyncio.run(scenario(sessions[:1], 0, "any"))
    assert warm[sessions[0]][0] == "success", warm
    DONE.clear()
    sampler = _RssSampler()

    async def main() -> None:
        run = asyncio.ensure_future(scenario(sessions, args.after))
        await asyncio.sleep(0)
        print(f"READY {time.time()}", flush=True)
        try:
            await asyncio.wait_for(asyncio.shield(run), args.deadline)
        except asyncio.TimeoutError:  # not TimeoutError before Python 3.11
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)

    started = time.time()
    asyncio.run(main())
    finished = time.time()
    sampler.stop()
    emit(
        {
            "events": {str(k): v for k, v in DONE.items()},
            "started": started,
            "finished": finished,
            "rss_baseline": sampler.baseline,
            "rss_peak": sampler.peak,
        }
    )


def _one_run(
    bench_portal: BenchPortal,
    env: dict[str, str],
    mode: str,
    m: int,
    interval: float,
    timeout: float,
    lead: float = 2.0,
) -> dict[str, Any]:
    """One run; the messages start appearing ``lead`` seconds after every wait runs."""
    portal = bench_portal.portal
    bench_portal.reset()
    sessions = list(portal.seed.extra_session_ids[:m])
    after = max(portal.engine.state.messages)
    spread = 2 * interval
    appear: dict[int, float] = {}

    def on_line(line: str, _: Any) -> None:
        if not line.startswith("READY "):
            return
        for index, session_id in enumerate(sessions):
            delay = lead + spread * ((index * 7919) % m) / m
            before = time.time()
            portal.add_message(session_id, OPERATOR, f"Operator reply {index}", delay=delay)
            appear[session_id] = before + delay  # the earliest it can appear: latencies are upper bounds

    deadline = lead + spread + 4 * interval + 10
    out = run_worker(
        "b2_waiting",
        [
            "--mode",
            mode,
            "--first-session",
            str(sessions[0]),
            "--m",
            str(m),
            "--after",
            str(after),
            "--interval",
            str(interval),
            "--deadline",
            str(deadline),
            "--user",
            str(bench_portal.user_id),
            "--code",
            bench_portal.code,
        ],
        env,
        timeout=timeout,
        on_line=on_line,
    )
    stats = bench_portal.stats()
    window = [
        (t, method, status) for t, method, status in stats["log"] if out["started"] - 0.5 <= t <= out["finished"] + 0.5
    ]
    times = [t for t, _, _ in window]
    begin = min(appear.values()) - lead
    duration = max(t for t in times) - begin if times else 0.0
    events = {int(k): v for k, v in out["events"].items()}
    latencies = [seen - appear[s] for s, (status, seen) in events.items() if status == "success"]
    failed = sorted({status for status, _ in events.values() if status != "success"})
    return {
        "mode": mode,
        "m": m,
        "interval_s": interval,
        "detected": len(latencies),
        "failed": len(events) - len(latencies),
        "failures": failed,
        "requests": len(times),
        "ok": sum(1 for _, _, status in window if status == 200),
        "s503": sum(1 for _, _, status in window if status == 503),
        "no_answer": sum(1 for _, _, status in window if status == 0),
        "rps": len(times) / duration if duration else 0.0,
        "ok_rps": sum(1 for _, _, status in window if status == 200) / duration if duration else 0.0,
        "peak_1s": peak_in_window(times, 1.0),
        "peak_10s": peak_in_window(times, 10.0),
        "would_be_refused": refused_by_bucket(times),
        "latency_median_s": percentile(latencies, 0.5) if latencies else None,
        "latency_p95_s": percentile(latencies, 0.95) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
        "rss_per_wait_kib": (out["rss_peak"] - out["rss_baseline"]) / m / 1024,
        "duration_s": duration,
    }


def bench(home: Path, *, quick: bool) -> dict[str, Any]:
    counts = [100] if quick else [100, 500, 1000]
    interval = 5.0 if quick else 10.0
    with BenchPortal("standard", fields={"extra_sessions": max(counts), "log_size": 1_000_000}) as bench_portal:
        env = worker_env(home, {B24_CONN: bench_portal.bitrix24_conn(), HTTP_CONN: bench_portal.http_conn()})
        rows = []
        for m in counts:
            for mode in ("shared", "independent"):
                log(f"B2 {mode}: {m} waits polling every {interval:g} s")
                row = _one_run(bench_portal, env, mode, m, interval, timeout=600)
                log(
                    f"B2 {mode} M={m}: {row['detected']}/{m} detected, {row['rps']:.2f} req/s, "
                    f"{row['s503']} x 503, p95 {row['latency_p95_s']}"
                )
                rows.append(row)
    return {"interval_s": interval, "burst": BURST, "per_second": PER_SECOND, "rows": rows}
