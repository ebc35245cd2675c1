"""
B6: event-driven runs on new open-line messages: latency and requests, against the sensor doing the same job.

W watchers (1, 10, 50) on one connection each want every new client message of S = 20 open-line chats, on a
standard-plan portal. Two ways, each run in this process with one event loop (a triggerer):

``trigger``
    W ``Bitrix24MessageTrigger`` watchers (Airflow 3.3 shared stream in ack mode, driven by Airflow's own
    ``SharedStreamManager``; the persist confirmation of each derived event is given 50 ms after it is emitted,
    a stand-in for the triggerer's state sync) at the default poll interval (10 s).
``sensor``
    W x S deferred ``SessionHistorySensor`` waits (``SessionHistoryTrigger``), one per (watcher, session), polling
    every 10 s as well, through this provider's shared poller (``batch`` requests of 50): what a DAG per watcher
    with one sensor per known session costs.

During a window of ``window_s`` seconds a client message appears every ``gap_s`` seconds in a chat taken in turn;
the figures are the requests per minute at the portal over the window, and the seconds from a message's appearance
to the event that carries it (the trigger event for ``trigger``, the end of the wait for ``sensor``). The time the
scheduler then takes to create the DAG run (one scheduler loop, about a second) is not included. A sensor wait ends
with its message: here it is re-armed at once (a new wait in its session), which a real DAG would do with a new run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BURST, PER_SECOND, log, percentile

WATCHERS = (1, 10, 50)
CHATS = 20
CLIENT = 109
INTERVAL = 10.0
CONN = "bench_b6"


def _portal() -> Any:
    from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal

    portal = SandboxPortal(SandboxConfig.preset("standard", extra_sessions=CHATS, bulk_messages=0)).start()
    state = portal.engine.state
    with state.lock:
        for chat_id in portal.seed.extra_chat_ids:
            state.chats[chat_id].member_ids.append(1)
    os.environ[f"AIRFLOW_CONN_{CONN.upper()}"] = portal.airflow_conn_json("webhook")
    return portal


def _sessions(portal: Any) -> list[int]:
    return list(portal.seed.extra_session_ids)


async def _messages(portal: Any, sessions: list[int], window: float, gap: float, sent: dict[int, float]) -> None:
    n = 0
    await asyncio.sleep(gap)
    deadline = time.monotonic() + window - gap
    while time.monotonic() < deadline:
        session = sessions[n % len(sessions)]
        message_id = portal.add_message(session, CLIENT, f"question {n}?")
        sent[message_id] = time.monotonic()
        n += 1
        await asyncio.sleep(gap)


async def _trigger_run(portal: Any, watchers: int, window: float, gap: float) -> dict[str, Any]:
    from airflow.triggers.shared_stream import SharedStreamManager

    from airflow_provider_bitrix24.triggers.messages import Bitrix24MessageTrigger

    manager = SharedStreamManager()
    seen: dict[int, float] = {}
    sent: dict[int, float] = {}

    async def run(trigger_id: int) -> None:
        trigger = Bitrix24MessageTrigger(bitrix24_conn_id=CONN, poll_interval=INTERVAL)
        key = trigger.shared_stream_key()
        stream = manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=key)
        async for event in trigger.filter_shared_stream(stream):
            seq = manager.bind_pending_event(trigger_id=trigger_id, key=key)
            now = time.monotonic()
            for record in event.payload["messages"]:
                seen.setdefault(record["id"], now)
            if seq is not None:
                asyncio.get_running_loop().call_later(0.05, manager.confirm_persisted, [seq])

    tasks = [asyncio.create_task(run(i + 1)) for i in range(watchers)]
    await _until(lambda: 1 in portal.engine.state.events.subscribed)
    before, started = portal.stats()["requests"], time.monotonic()
    await _messages(portal, _sessions(portal), window, gap, sent)
    requests = portal.stats()["requests"] - before
    elapsed = time.monotonic() - started
    with contextlib.suppress(AssertionError):
        await _until(lambda: set(sent) <= set(seen), INTERVAL * 3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await manager.stop_all()
    latencies = [seen[m] - t for m, t in sent.items() if m in seen]
    return _row("trigger", watchers, requests, requests, elapsed, sent, latencies)


async def _sensor_run(portal: Any, watchers: int, window: float, gap: float) -> dict[str, Any]:
    from airflow_provider_bitrix24.triggers.session_history import SessionHistoryTrigger

    sessions = _sessions(portal)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def wait(session: int) -> None:
        after = max(portal.engine.state.sessions[session].message_ids)
        while not stop.is_set():
            trigger = SessionHistoryTrigger(
                bitrix24_conn_id=CONN,
                session_id=session,
                after_message_id=after,
                authors=("client",),
                poll_interval=INTERVAL,
            )
            async for event in trigger.run():
                now = time.monotonic()
                messages = event.payload.get("messages") or []
                for message in messages:
                    if message["id"] in sent:
                        latencies.append(now - sent[message["id"]])
                after = max([after, *(m["id"] for m in messages)])

    tasks = [asyncio.create_task(wait(s)) for _ in range(watchers) for s in sessions]
    await asyncio.sleep(INTERVAL)  # every wait has polled once
    before, started = portal.stats()["requests"], time.monotonic()
    await _messages(portal, sessions, window, gap, sent)
    requests = portal.stats()["requests"] - before
    elapsed = time.monotonic() - started
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return _row("sensor", watchers, requests, requests, elapsed, sent, latencies, waits=watchers * len(sessions))


def _row(
    mode: str,
    watchers: int,
    polls: int,
    requests: int,
    elapsed: float,
    sent: dict[int, float],
    latencies: list[float],
    waits: int | None = None,
) -> dict[str, Any]:
    return {
        "mode": mode,
        "watchers": watchers,
        "waits": waits if waits is not None else watchers,
        "requests_per_min": round(polls * 60 / elapsed, 2),
        "messages": len(sent),
        "latency_p50_s": round(percentile(latencies, 0.5), 2) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 2) if latencies else None,
        "latency_samples": len(latencies),
    }


async def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def bench(home: Path, quick: bool = False, **_: Any) -> dict[str, Any]:
    window, gap = (40.0, 4.0) if quick else (90.0, 3.0)
    rows = []
    for watchers in WATCHERS:
        for mode, runner in (("trigger", _trigger_run), ("sensor", _sensor_run)):
            portal = _portal()
            try:
                log(f"B6 {mode} W={watchers}")
                rows.append(asyncio.run(runner(portal, watchers, window, gap)))
            finally:
                portal.stop()
            log(f"B6 {json.dumps(rows[-1])}")
    return {"rows": rows, "interval_s": INTERVAL, "chats": CHATS, "window_s": window, "gap_s": gap,
            "burst": BURST, "per_second": PER_SECOND}  # fmt: skip


def checks(data: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    rows = {(r["mode"], r["watchers"]): r for r in data["rows"]}
    one, fifty = rows[("trigger", 1)], rows[("trigger", 50)]
    ratio = fifty["requests_per_min"] / max(one["requests_per_min"], 1e-9)
    return [
        ("B6", "requests/min, 50 watchers vs 1 (trigger)", "about 1x (flat)", ratio <= 1.5, f"{ratio:.2f}x"),
        (
            "B6",
            "latency p95 at the default interval",
            f"<= interval ({data['interval_s']:g} s) + 2 s",
            (one["latency_p95_s"] or 1e9) <= data["interval_s"] + 2,
            f"{one['latency_p95_s']} s",
        ),
    ]


def section(entry: dict[str, Any]) -> list[str]:
    data = entry["data"]
    base = {r["watchers"]: r for r in data["rows"] if r["mode"] == "trigger"}[1]["requests_per_min"] or 1
    lines = [
        "## B6: event-driven runs on new messages",
        "",
        f"Measured {entry.get('measured_at', '?')}{' (quick run)' if entry.get('quick') else ''} on "
        f"{entry.get('machine', {}).get('cpu', '?')}, {entry.get('machine', {}).get('cores', '?')} cores, with "
        + ", ".join(f"{k} {v}" for k, v in entry.get("versions", {}).items())
        + ".",
        "",
        f"W watchers on one connection each want every new client message of {data['chats']} open-line chats, on a "
        f"standard-plan portal ({data['burst']} burst, {data['per_second']:g} req/s), polling every "
        f"{data['interval_s']:g} s; for {data['window_s']:g} s a client message appears every {data['gap_s']:g} s. "
        "*trigger*: `Bitrix24MessageTrigger` watchers in Airflow 3.3's shared stream (ack mode, Airflow's own "
        "`SharedStreamManager`). *sensor*: one deferred `SessionHistorySensor` wait per watcher and session "
        "(re-armed after each message), through the provider's shared poller. Latency: from the message's "
        "appearance to the trigger event (or the end of the wait); the scheduler's loop (about a second) to "
        "create the DAG run comes on top. Requests/min are counted at the portal over the window; the ratio is "
        "against the trigger with one watcher, in the same session. One run per row.",
        "",
        "| W | way | waits | requests/min | vs trigger, W = 1 | latency p50 / p95, s | messages seen |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        lines.append(
            f"| {row['watchers']} | {row['mode']} | {row['waits']} | {row['requests_per_min']:.1f} "
            f"| {row['requests_per_min'] / base:.2f}x | {row['latency_p50_s']} / {row['latency_p95_s']} "
            f"| {row['latency_samples']} of {row['messages'] * (row['watchers'] if row['mode'] == 'sensor' else 1)} |"
        )
    lines.append("")
    return lines
