"""
B2R: B2's deferred waits on a portal that answers at a real portal's speed (the sandbox's ``realistic`` model).

M ``SessionHistoryTrigger`` waits in one event loop poll one standard-plan portal whose answers take a network
round trip, the portal's per-request overhead and the processing of every ``session.history.get`` of a batch, one
after another (a batch of 50 polls takes about 3.5 s). Same scenario and figures as B2's *shared* rows (see
:mod:`benchmarks.b2_waiting`), repeated a few times, plus one *sustained* run whose messages appear only after
:data:`SUSTAINED_LEAD` seconds of polling: long enough for the polls to spend the portal's operating-time budget.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from pathlib import Path
from typing import Any

from airflow_provider_bitrix24.sandbox.latency import PRESETS
from benchmarks.b2_waiting import B24_CONN, HTTP_CONN, _one_run
from benchmarks.common import BURST, HISTORY, PER_SECOND, BenchPortal, log, worker_env

MODEL = PRESETS["realistic"]
#: Seconds of polling before the messages of the sustained run appear.
SUSTAINED_LEAD = 150.0
#: The portal's operating-time budget per method, seconds per 10 minutes.
OPERATING_BUDGET = 480.0


def _portal_side(bench_portal: BenchPortal, row: dict[str, Any], ended: float) -> None:
    """
    Add what the portal saw to a run's row: refusals for the operating limit, how long polling went on, and how
    long the portal then heard nothing until the run ``ended`` (Unix time).
    """
    stats = bench_portal.stats()
    times = sorted(t for t, _, _ in stats["log"])
    row["operating_refusals"] = stats["errors"].get("OPERATION_TIME_LIMIT", 0) + stats["batch_errors"].get(
        "OPERATION_TIME_LIMIT", 0
    )
    row["polls"] = stats["batch_commands"]
    row["polling_s"] = times[-1] - times[0] if times else 0.0
    row["longest_gap_s"] = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    row["silent_at_end_s"] = ended - times[-1] if times else 0.0


def bench(home: Path, *, quick: bool) -> dict[str, Any]:
    m = 100 if quick else 1000
    runs = 1 if quick else 3
    interval = 5.0 if quick else 10.0
    fields = {"extra_sessions": m, "log_size": 1_000_000, "latency": "realistic"}
    rows = []
    with BenchPortal("standard", fields=fields) as bench_portal:
        env = worker_env(home, {B24_CONN: bench_portal.bitrix24_conn(), HTTP_CONN: bench_portal.http_conn()})
        leads = [2.0] * runs + ([] if quick else [SUSTAINED_LEAD])
        for run_no, lead in enumerate(leads):
            load = os.getloadavg()[0]
            log(f"B2R shared: {m} waits polling every {interval:g} s, messages after {lead:g} s, run {run_no + 1}")
            row = _one_run(bench_portal, env, "shared", m, interval, timeout=lead + 600, lead=lead)
            row["load_1min"] = load
            row["lead_s"] = lead
            _portal_side(bench_portal, row, time.time())
            log(
                f"B2R shared M={m}: {row['detected']}/{m} detected, {row['rps']:.2f} req/s, {row['s503']} x 503, "
                f"p95 {row['latency_p95_s']}, {row['operating_refusals']} refused for the operating limit, "
                f"{row['polls']} polls over {row['polling_s']:.0f} s, load {load:.1f}"
            )
            rows.append(row)
    return {
        "interval_s": interval,
        "burst": BURST,
        "per_second": PER_SECOND,
        "m": m,
        "rows": rows,
        "model": {
            "round_trip": MODEL.round_trip,
            "overhead": MODEL.overhead,
            "per_poll": MODEL.processing_of(HISTORY),
        },
    }


def _standard(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in data["rows"] if r.get("lead_s", 2.0) <= 2.0]


def _sustained(data: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in data["rows"] if r.get("lead_s", 2.0) > 2.0), None)


def budget_polls_per_second() -> float:
    """Polls per second the operating-time budget allows, sustained, at the model's processing time."""
    return OPERATING_BUDGET / 600.0 / MODEL.processing_of(HISTORY)


def checks(data: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    rows = _standard(data)
    m, interval, limit = data["m"], data["interval_s"], data["per_second"]
    worst_rps = max(r["rps"] for r in rows)
    refused = max(r["would_be_refused"] for r in rows)
    p95s = [r["latency_p95_s"] for r in rows if r["latency_p95_s"] is not None]
    all_detected = all(r["detected"] == m for r in rows)
    stated = [
        (
            "B2R",
            f"503s at M = {m}, realistic latency",
            "0",
            all(r["s503"] == 0 for r in rows),
            ", ".join(str(r["s503"]) for r in rows) + f" ({len(rows)} runs)",
        ),
        (
            "B2R",
            f"request rate at the portal at M = {m}, realistic latency",
            f"<= {limit:g} req/s (burst {data['burst']})",
            worst_rps <= limit and refused == 0,
            f"{worst_rps:.2f} req/s at most; peak {max(r['peak_10s'] for r in rows)} in any 10 s; "
            f"{refused} the bucket would refuse",
        ),
        (
            "B2R",
            f"p95 from appearance to trigger event at M = {m}, realistic latency",
            f"<= 2 polling rounds ({2 * interval:g} s)",
            bool(p95s) and len(p95s) == len(rows) and max(p95s) <= 2 * interval and all_detected,
            f"{statistics.median(p95s):.1f} s median of {len(rows)} runs ({min(p95s):.1f}-{max(p95s):.1f}); "
            f"{'all' if all_detected else 'not all'} detected"
            if p95s
            else "nothing detected",
        ),
    ]
    return [*stated, *_sustained_checks(data)]


def _sustained_checks(data: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    row = _sustained(data)
    if row is None:
        return []
    m, interval = row["m"], data["interval_s"]
    return [
        (
            "B2R",
            f"p95 detection at M = {m} when messages appear after {row['lead_s']:.0f} s of polling (sustained; "
            "not one of the stated goals)",
            f"<= 2 polling rounds ({2 * interval:g} s)",
            row["latency_p95_s"] is not None and row["latency_p95_s"] <= 2 * interval and row["detected"] == m,
            f"{row['detected']}/{m} detected within the run; {row['polls']} polls in {row['polling_s']:.0f} s, then "
            f"none for the last {row.get('silent_at_end_s', 0.0):.0f} s of the run (the operating-time budget)",
        )
    ]


def _budget_note(data: dict[str, Any]) -> list[str]:
    """What the operating-time budget allows, and what the sustained run showed."""
    model = data["model"]
    m, interval = data["m"], data["interval_s"]
    allowed = budget_polls_per_second()
    wanted = m / interval
    text = (
        f"**The operating-time budget.** The portal allows each method (a `batch` is billed as `batch`) "
        f"{OPERATING_BUDGET:.0f} s of processing per 10 minutes; at {model['per_poll']:.3f} s per "
        f"`session.history.get` that is {allowed:.1f} polls per second, sustained. {m} waits polled every "
        f"{interval:g} s ask for {wanted:.0f} per second ({wanted * model['per_poll']:.1f} s of processing per "
        f"second), so the budget lasts about {OPERATING_BUDGET / (wanted * model['per_poll']):.0f} s at that pace; "
        "then the client, which reads the running total from every answer, holds every poll until the oldest minute "
        "of the budget expires, up to 10 minutes after the first poll, instead of drawing `OPERATION_TIME_LIMIT`. "
        f"On such a portal, {m} waits can be polled every {m / allowed:.0f} s at best."
    )
    row = _sustained(data)
    if row is not None:
        text += (
            f" The sustained run shows it: {row['polls']} polls in {row['polling_s']:.0f} s, "
            f"{row['operating_refusals']} refused for the operating limit, then no request in the last "
            f"{row.get('silent_at_end_s', 0.0):.0f} s of the run, and {row['detected']}/{row['m']} of the messages, "
            f"which appeared from {row['lead_s']:.0f} s on, seen before it ended."
        )
    return [text, ""]


def _s(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def section(entry: dict[str, Any]) -> list[str]:
    data = entry["data"]
    model = data["model"]
    interval = data["interval_s"]
    per_batch = model["round_trip"] + model["overhead"] + 50 * model["per_poll"]
    loads = [r["load_1min"] for r in data["rows"]]
    mode = " (quick run: smaller sizes, fewer runs)" if entry.get("quick") else ""
    lines = [
        "## B2R: waiting at a real portal's speed",
        "",
        f"_Measured {entry['measured_at']} in {entry['seconds']:.0f} s{mode}; 1-minute load average during the runs: "
        f"{min(loads):.1f}-{max(loads):.1f}._",
        "",
        f"B2's *shared* scenario (M `SessionHistoryTrigger` waits in one event loop, each polling every {interval:g} s, "
        "one operator message appearing in each session over two polling intervals), against the same standard-plan "
        f"portal answering at the `realistic` latency: {model['round_trip']:.3f} s round trip, "
        f"{model['overhead']:.3f} s per request and {model['per_poll']:.3f} s per `session.history.get`, the polls "
        f"of a batch processed one after another, so a batch of 50 polls takes {per_batch:.2f} s. One row per run.",
        "",
        f"| M | messages after | requests/s at the portal (limit {data['per_second']:g}) | peak in 1 s / 10 s "
        "| 503s | detected | latency median / p95 / max, s | peak RSS per wait |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        failed = f", {row['failed']} failed" if row.get("failed") else ""
        lines.append(
            f"| {row['m']} | {row.get('lead_s', 2.0):.0f} s | {row['rps']:.2f} ({row['ok_rps']:.2f} answered 200) "
            f"| {row['peak_1s']} / {row['peak_10s']} | {row['s503']} | {row['detected']}/{row['m']}{failed} "
            f"| {_s(row['latency_median_s'])} / {_s(row['latency_p95_s'])} / {_s(row['latency_max_s'])} "
            f"| {row['rss_per_wait_kib'] * 1.024:.1f} KB |"
        )
    lines += [
        "",
        f"A poll sees a message only if the portal processed it after the message appeared; the next poll of a "
        f"session leaves one interval after the previous answer, and its answer comes back up to a batch's time "
        f"later, so at this latency a detection can take up to about {interval + 2 * per_batch:.0f} s "
        f"({interval:g} + 2 x {per_batch:.1f}) while the poller keeps up.",
        "",
    ]
    lines += _budget_note(data)
    return lines
