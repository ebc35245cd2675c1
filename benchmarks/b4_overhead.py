"""
B4: what one ``Bitrix24Hook.call`` costs over a bare ``requests.Session.post`` to the same URL.

The sandbox runs with its limits off (``unlimited`` preset, and a connection rate limit too high to pace), the
method is ``server.time`` (the cheapest on the portal), and both sides parse the JSON answer. One worker
process alternates blocks of calls between the two, so drifts of the machine hit both alike; the figure is the
ratio of the median per-call times. ``Bitrix24Client.call`` (the client without the hook) is measured too, to
show where the overhead lives.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import NO_PACING, BenchPortal, emit, log, run_worker, summary, worker_env

CONN = "bench_b4"
METHOD = "server.time"


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--webhook", required=True)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    import requests

    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

    session = requests.Session()
    url = args.webhook + METHOD
    hook = Bitrix24Hook(bitrix24_conn_id=CONN)
    client = hook.client  # built outside the clock; the hook's first call builds it otherwise

    def raw() -> Any:
        response = session.post(url, json={})
        response.raise_for_status()
        return response.json()["result"]

    def via_hook() -> Any:
        return hook.call(METHOD)

    def via_client() -> Any:
        return client.call(METHOD)

    contenders = {"raw": raw, "hook": via_hook, "client": via_client}
    for call in contenders.values():  # warm connections, imports and caches
        for _ in range(20):
            call()
    per_call: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, call in contenders.items():
            started = time.perf_counter()
            for _ in range(args.calls):
                call()
            per_call[name].append((time.perf_counter() - started) / args.calls)
    emit({"per_call_s": per_call, "calls": args.calls, "rounds": args.rounds})


def bench(home: Path, *, quick: bool) -> dict[str, Any]:
    calls, rounds, workers = (100, 3, 1) if quick else (300, 5, 3)
    with BenchPortal("unlimited") as bench_portal:
        env = worker_env(home, {CONN: bench_portal.bitrix24_conn(rate_limit=NO_PACING)})
        samples: dict[str, list[float]] = {"raw": [], "hook": [], "client": []}
        ratios = []
        for number in range(workers):
            bench_portal.reset()
            log(f"B4: worker {number + 1}/{workers}, {rounds} rounds of {calls} calls each way")
            out = run_worker(
                "b4_overhead",
                ["--webhook", bench_portal.webhook_url, "--calls", str(calls), "--rounds", str(rounds)],
                env,
                timeout=600,
            )
            for name, values in out["per_call_s"].items():
                samples[name].extend(values)
            ratios.append(statistics.median(out["per_call_s"]["hook"]) / statistics.median(out["per_call_s"]["raw"]))
    raw = statistics.median(samples["raw"])
    return {
        "calls": calls,
        "rounds": rounds,
        "workers": workers,
        "per_call_us": {
            name: {k: v * 1e6 for k, v in summary(values).items() if k != "n"} for name, values in samples.items()
        },
        "ratio_hook": statistics.median(samples["hook"]) / raw,
        "ratio_client": statistics.median(samples["client"]) / raw,
        "ratio_hook_per_worker": summary(ratios),
    }
