"""
B5: P worker processes share one portal: P x N one-call-per-message saves, with and without the shared limiter.

Every worker is a process of its own (as Celery workers, Kubernetes pods or triggerers are) with its own
``Bitrix24Hook`` on the same webhook connection, and saves N messages of the bulk chat with one
``imopenlines.message.quick.save`` call each. The workers are started, build their clients, and only then all
begin at once. The portal has the standard plan's limits (burst 50, 2 requests/s per portal), so the least time
the P x N calls can take is ``max(0, (P x N - 50) / 2)`` s.

``per-process``
    the connection as it is: each process paces itself with its own copy of the portal's bucket;
``shared``
    the connection's ``redis_conn_id`` extra names an Airflow Redis connection (a ``redis-server`` the benchmark
    starts on loopback), so that all processes share one bucket. Needs ``redis-server`` (``.ci/install-services``)
    and the Redis provider; the rows are skipped, with the reason logged, when either is missing.

Reported per row: HTTP requests the portal saw, ``QUERY_LIMIT_EXCEEDED`` answers (503), calls that failed after
their retries, messages saved, and the wall time from the common start to the last worker's end against the ideal.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BURST,
    PER_SECOND,
    QUICK_SAVE,
    BenchPortal,
    emit,
    ideal_seconds,
    log,
    run_worker,
    worker_env,
)

CONN = "bench_b5"
REDIS_CONN = "bench_b5_redis"
MODES = ("per-process", "shared")


# --------------------------------------------------------------------------- worker side


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chat", type=int, required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)

    from airflow_provider_bitrix24.client.errors import Bitrix24Error
    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

    hook = Bitrix24Hook(bitrix24_conn_id=CONN)
    hook.client  # noqa: B018 - connection lookup and client built before the common start
    print("READY", flush=True)
    sys.stdin.readline()  # the runner says go when every worker is ready
    started = time.time()
    failed: Counter[str] = Counter()
    for message_id in range(args.first, args.first + args.count):
        try:
            hook.call(QUICK_SAVE, {"CHAT_ID": args.chat, "MESSAGE_ID": message_id})
        except Bitrix24Error as err:
            failed[err.code] += 1
    emit({"started": started, "finished": time.time(), "failed": dict(failed)})


# --------------------------------------------------------------------------- runner side


def _shared_unavailable() -> str | None:
    """Why the shared-limiter rows cannot run here, or ``None``."""
    if importlib.util.find_spec("airflow.providers.redis") is None:
        return "the Redis provider (apache-airflow-providers-redis) is not installed"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (.ci/install-services)"
    return None


def _one_run(
    bench_portal: BenchPortal, env: dict[str, str], mode: str, processes: int, calls: int, timeout: float
) -> dict[str, Any]:
    bench_portal.reset()
    portal = bench_portal.portal
    chat = portal.seed.bulk_chat_id
    first = portal.seed.bulk_message_ids.start
    ready = threading.Barrier(processes)
    outputs: list[dict[str, Any] | None] = [None] * processes
    errors: list[str] = []

    def on_line(line: str, process: Any) -> None:
        if line != "READY":
            return
        try:
            ready.wait(timeout)
        except threading.BrokenBarrierError:  # another worker failed: this one does not start
            process.kill()
            return
        process.stdin.write("go\n")
        process.stdin.flush()

    def run(index: int) -> None:
        try:
            outputs[index] = run_worker(
                "b5_processes",
                ["--chat", str(chat), "--first", str(first + index * calls), "--count", str(calls)],
                env,
                timeout=timeout,
                on_line=on_line,
            )
        except Exception as exc:
            ready.abort()
            errors.append(str(exc))

    threads = [threading.Thread(target=run, args=(index,)) for index in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"B5 {mode} P={processes}: " + errors[0])
    results = [out for out in outputs if out is not None]
    stats = bench_portal.stats()
    wanted = set(range(first, first + processes * calls))
    saved = Counter(a["message_id"] for a in portal.quick_answers() if a["message_id"] in wanted)
    failed: Counter[str] = Counter()
    for out in results:
        failed.update(out["failed"])
    wall = max(out["finished"] for out in results) - min(out["started"] for out in results)
    ideal = ideal_seconds(processes * calls)
    return {
        "mode": mode,
        "p": processes,
        "n": calls,
        "calls": processes * calls,
        "requests": stats["requests"],
        "s503": stats["errors"].get("QUERY_LIMIT_EXCEEDED", 0),
        "failed": sum(failed.values()),
        "failed_codes": dict(failed),
        "saved_once": sum(1 for count in saved.values() if count == 1),
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio": wall / ideal if ideal else None,
    }


def bench(home: Path, *, quick: bool, modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    counts = (1, 2, 4) if quick else (1, 2, 4, 8)
    calls = 30 if quick else 60
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    redis = None
    if "shared" in modes and (reason := _shared_unavailable()):
        log(f"B5: skipping the shared-limiter rows: {reason}")
        skipped["shared"] = reason
        modes = tuple(m for m in modes if m != "shared")
    try:
        with BenchPortal("standard", fields={"log_size": 1_000_000}) as bench_portal:
            envs = {"per-process": worker_env(home, {CONN: bench_portal.bitrix24_conn()})}
            if "shared" in modes:
                from tests.support.services import RedisServer

                redis = RedisServer(Path(tempfile.mkdtemp(prefix="bitrix24-bench-redis-"))).start()
                envs["shared"] = worker_env(
                    home,
                    {
                        CONN: bench_portal.bitrix24_conn(redis_conn_id=REDIS_CONN),
                        REDIS_CONN: json.dumps(redis.airflow_conn(db=0)),
                    },
                )
            for mode in modes:
                for processes in counts:
                    if redis is not None:
                        redis.flush()  # a fresh shared bucket, as the portal's is after its reset
                    log(f"B5 {mode}: {processes} process(es) x {calls} calls")
                    row = _one_run(bench_portal, envs[mode], mode, processes, calls, timeout=900)
                    log(
                        f"B5 {mode} P={processes}: {row['requests']} requests, {row['s503']} x 503, "
                        f"{row['failed']} failed, {row['wall_s']:.1f} s vs ideal {row['ideal_s']:.1f} s"
                    )
                    rows.append(row)
    finally:
        if redis is not None:
            redis.stop()
            shutil.rmtree(redis.workdir, ignore_errors=True)
    return {"burst": BURST, "per_second": PER_SECOND, "calls": calls, "rows": rows, "skipped": skipped}
