"""
B1R: B1's bulk save on a portal that answers at a real portal's speed (the sandbox's ``realistic`` latency model).

The batching contenders of B1 (``SaveQuickAnswerOperator``, fast-bitrix24's ``Bitrix.call`` with a list, b24pysdk's
``call_batches``) save 1,000 and 10,000 messages against one standard-plan portal (burst 50, 2 requests/s) whose
answers take what the latency model says: a network round trip, the portal's per-request overhead, and the
processing of each command of a batch one after another. Each run is a fresh worker process (B1's worker), the
contenders are alternated (the order rotates every round), and every contender goes through the same TLS front.

Two runs are bounded rather than run to the end, and say so in the report:

* a contender that has not finished within ``cap_s`` is stopped; the row says how far it got and how long it sat
  idle (fast-bitrix24 at 10,000 pauses for its own operating-time throttle);
* b24pysdk sends its batches one after another, so its time is linear in the number of requests; at 10,000 it is
  measured on fewer messages and continued at the rate it sustained: ``T(N) = T(n) + (N - n) / r``.

*Ideal* is the least time the bucket and the per-command processing allow with unlimited concurrency and full
batches of 50 (:func:`full_batch_floor`); :func:`least_seconds` is the stricter bound for any split into batches.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_bitrix24.sandbox.latency import PRESETS
from benchmarks import b1_bulk_save
from benchmarks.b1_bulk_save import B24_CONN, HTTP_CONN
from benchmarks.common import (
    BURST,
    PER_SECOND,
    QUICK_SAVE,
    BenchPortal,
    emit,
    log,
    refused_by_bucket,
    run_worker,
    summary,
    worker_env,
)

#: Commands per ``batch`` request at most.
BATCH_LIMIT = 50
#: The latency model every run uses.
MODEL = PRESETS["realistic"]
CONTENDERS = {
    "operator": "SaveQuickAnswerOperator (this provider)",
    "hook_spread": "Bitrix24Hook.call_batch(spread=True) (this provider)",
    "fast_bitrix24": "fast-bitrix24 Bitrix.call with a list",
    "b24pysdk": "b24pysdk Client.call_batches",
}
TARGET_VS_FAST = 0.8
TARGET_VS_IDEAL = 1.2
#: A bar of the chart: (median/min/max, or None when not measured or not finished), finished, extrapolated.
_Item = tuple[dict[str, Any] | None, bool, bool]


# --------------------------------------------------------------------------- the ideal


def request_seconds(commands: int) -> float:
    """Client-side time of one ``batch`` of ``commands`` saves: round trip, overhead, then each save in turn."""
    return MODEL.round_trip + MODEL.overhead + commands * MODEL.processing_of(QUICK_SAVE)


def start_of(index: int, burst: int = BURST, per_second: float = PER_SECOND) -> float:
    """The earliest the bucket lets request ``index`` (0-based) go: ``burst`` at once, then ``per_second``."""
    return max(0.0, (index + 1 - burst) / per_second)


def full_batch_floor(n: int) -> float:
    """
    The least time for ``n`` saves sent as ``ceil(n / 50)`` full batches (the last one holding the rest):
    ``max(0, (R - burst) / rate) + round trip + overhead + 50 x processing``; with fewer requests than the burst,
    every request goes at once and the floor is one full batch.
    """
    requests = math.ceil(n / BATCH_LIMIT)
    sizes = [BATCH_LIMIT] * (requests - 1) + [n - BATCH_LIMIT * (requests - 1)]
    sizes.sort(reverse=True)  # the largest go first: the last request to leave is the smallest
    return max(start_of(i) + request_seconds(k) for i, k in enumerate(sizes))


def least_seconds(n: int) -> float:
    """
    The least time the portal allows for ``n`` saves with unlimited concurrency and any split into batches: the
    smallest ``T`` with ``sum_i min(50, floor((T - s_i - round trip - overhead) / processing)) >= n``, where
    ``s_i`` is the earliest start the bucket gives request ``i``. Found by bisection to a millisecond.
    """
    per = MODEL.processing_of(QUICK_SAVE)
    fixed = MODEL.round_trip + MODEL.overhead

    def capacity(total: float) -> int:
        saves, index = 0, 0
        while (start := start_of(index)) + fixed + per <= total and saves < n:
            saves += min(BATCH_LIMIT, math.floor((total - start - fixed) / per + 1e-9))
            index += 1
        return saves

    low, high = 0.0, full_batch_floor(n)
    while high - low > 0.001:
        middle = (low + high) / 2
        if capacity(middle) >= n:
            high = middle
        else:
            low = middle
    return high


# --------------------------------------------------------------------------- worker side


def worker(argv: list[str]) -> None:
    """B1's worker, plus ``hook_spread``: ``Bitrix24Hook.call_batch`` with ``spread=True``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--contender", required=True)
    known, _ = parser.parse_known_args(argv)
    if known.contender != "hook_spread":
        b1_bulk_save.worker(argv)
        return
    parser.add_argument("--chat", type=int, required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    args, _ = parser.parse_known_args(argv)
    import airflow_provider_bitrix24.client.sync  # noqa: F401 - imported before the clock, as B1's warm-up does
    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

    hook = Bitrix24Hook(bitrix24_conn_id=B24_CONN)
    hook.config  # noqa: B018 - the connection lookup a task has done before it saves, outside the clock
    ids = range(args.first, args.first + args.n)
    commands = {str(m): (QUICK_SAVE, {"CHAT_ID": args.chat, "MESSAGE_ID": m}) for m in ids}
    started = time.time()
    clock = time.perf_counter()
    items = hook.call_batch(commands, spread=True)
    wall = time.perf_counter() - clock
    done = sum(1 for item in items if item.ok and item.result is True)
    emit({"wall_s": wall, "started": started, "finished": time.time(), "reported": done})


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Size:
    """How one size is measured: runs per contender, and where a contender is measured on fewer messages."""

    n: int
    runs: dict[str, int]
    measured_on: dict[str, int] = field(default_factory=dict)
    cap_s: float = 600.0


def plan(quick: bool) -> list[Size]:
    if quick:
        return [
            Size(1000, {"operator": 1, "hook_spread": 1, "fast_bitrix24": 1, "b24pysdk": 1}, cap_s=120),
            Size(
                3000,
                {"operator": 1, "hook_spread": 1, "fast_bitrix24": 1, "b24pysdk": 1},
                {"b24pysdk": 1000},
                cap_s=60,
            ),
        ]
    return [
        Size(1000, {"operator": 5, "hook_spread": 5, "fast_bitrix24": 5, "b24pysdk": 3}, cap_s=300),
        Size(
            10000,
            {"operator": 2, "hook_spread": 2, "fast_bitrix24": 2, "b24pysdk": 1},
            {"b24pysdk": 2000},
            cap_s=150,
        ),
    ]


def _idle(times: list[float], since: float, until: float) -> float:
    """The longest time without a finished request between ``since`` and ``until``."""
    marks = [since, *sorted(t for t in times if since <= t <= until), until]
    return max(b - a for a, b in itertools.pairwise(marks))


def _settle(bench_portal: BenchPortal, quiet: float = 2 * request_seconds(BATCH_LIMIT), limit: float = 60.0) -> None:
    """
    Wait until the portal has answered nothing for ``quiet`` seconds: requests a stopped contender left in flight
    are still being processed, and must be counted in its run, not in the next one.
    """
    deadline = time.monotonic() + limit
    count, since = bench_portal.stats()["requests"], time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.25)
        now = bench_portal.stats()["requests"]
        if now != count:
            count, since = now, time.monotonic()


def _one_run(
    bench_portal: BenchPortal, env: dict[str, str], common: list[str], contender: str, n: int, cap: float
) -> dict[str, Any]:
    portal = bench_portal.portal
    first = portal.seed.bulk_message_ids.start
    bench_portal.reset()
    load = os.getloadavg()[0]
    began = time.time()
    try:
        out = run_worker("b1r_realistic", ["--contender", contender, "--n", str(n), *common], env, timeout=cap)
        finished, error = True, None
    except RuntimeError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        ended = time.time()
        killed = ended - began >= cap - 0.5
        error = f"stopped at the {cap:.0f} s cap" if killed else (lines[-1] if lines else "failed")[:200]
        out = {"wall_s": ended - began, "started": began, "finished": ended, "reported": 0}
        finished = False
        _settle(bench_portal)
    stats = bench_portal.stats()
    ids = set(range(first, first + n))
    per_message = Counter(a["message_id"] for a in portal.quick_answers() if a["message_id"] in ids)
    times = [t for t, method, _ in stats["log"] if method == "batch"]
    ok_times = sorted(t for t, method, status in stats["log"] if method == "batch" and status == 200)
    return {
        "n": n,
        "finished": finished,
        "error": error,
        "wall_s": out["wall_s"],
        "requests": stats["requests"],
        "s503": stats["by_status"].get("503", 0),
        "saved_once": sum(1 for m in ids if per_message[m] == 1),
        "duplicated": sum(1 for m in ids if per_message[m] > 1),
        "reported": out["reported"],
        "would_be_refused": refused_by_bucket(times),
        "first_answer_s": (ok_times[0] - out["started"]) if ok_times else None,
        "last_answer_s": (ok_times[-1] - out["started"]) if ok_times else None,
        "longest_idle_s": _idle(times, out["started"], out["finished"]),
        "rate": (BATCH_LIMIT * (len(ok_times) - 1) / (ok_times[-1] - ok_times[0])) if len(ok_times) > 2 else None,
        "load_1min": load,
    }


def bench(home: Path, *, quick: bool) -> dict[str, Any]:
    sizes = plan(quick)
    fields = {"latency": "realistic", "bulk_messages": max(s.n for s in sizes)}
    results: dict[str, Any] = {"sizes": [], "model": model_figures()}
    with BenchPortal("standard", tls=True, fields=fields) as bench_portal:
        portal = bench_portal.portal
        connections = {B24_CONN: bench_portal.bitrix24_conn(), HTTP_CONN: bench_portal.http_conn()}
        env = worker_env(home, connections, bench_portal.ca_path)
        common = [
            "--chat",
            str(portal.seed.bulk_chat_id),
            "--first",
            str(portal.seed.bulk_message_ids.start),
            "--base-url",
            bench_portal.base_url,
            "--control-url",
            portal.base_url,
            "--user",
            str(bench_portal.user_id),
            "--code",
            bench_portal.code,
        ]
        for size in sizes:
            runs: dict[str, list[dict[str, Any]]] = {key: [] for key in size.runs}
            order = list(size.runs)
            for round_no in range(max(size.runs.values())):
                for contender in order[round_no % len(order) :] + order[: round_no % len(order)]:
                    if round_no >= size.runs[contender]:
                        continue
                    n = size.measured_on.get(contender, size.n)
                    log(f"B1R {size.n}: {contender} run {round_no + 1}/{size.runs[contender]}, {n} messages")
                    run = _one_run(bench_portal, env, common, contender, n, size.cap_s)
                    runs[contender].append(run)
                    log(
                        f"B1R {size.n}: {contender} {run['wall_s']:.2f} s"
                        f"{'' if run['finished'] else ' (' + str(run['error']) + ')'}, {run['requests']} requests, "
                        f"{run['s503']} x 503, {run['saved_once']}/{n} saved once, load {run['load_1min']:.1f}"
                    )
            results["sizes"].append(_summarise(size, runs))
    return results


def _summarise(size: Size, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    rows = []
    for key, contender_runs in runs.items():
        done = [r for r in contender_runs if r["finished"]]
        measured_on = size.measured_on.get(key, size.n)
        row: dict[str, Any] = {
            "key": key,
            "label": CONTENDERS[key],
            "n": measured_on,
            "runs": len(contender_runs),
            "finished": len(done),
            "errors": sorted({str(r["error"]) for r in contender_runs if not r["finished"]}),
            "wall_s": summary([r["wall_s"] for r in contender_runs]),
            "requests": summary([r["requests"] for r in contender_runs]),
            "s503": summary([r["s503"] for r in contender_runs]),
            "saved_once": summary([r["saved_once"] for r in contender_runs]),
            "duplicated": max(r["duplicated"] for r in contender_runs),
            "longest_idle_s": summary([r["longest_idle_s"] for r in contender_runs]),
            "load_1min": summary([r["load_1min"] for r in contender_runs]),
            "raw": contender_runs,
        }
        if measured_on < size.n:
            rates = [r["rate"] for r in done if r["rate"]]
            row["at_total"] = {
                "wall_s": summary([r["wall_s"] + (size.n - measured_on) / r["rate"] for r in done if r["rate"]]),
                "requests": math.ceil(size.n / BATCH_LIMIT),
                "rate": summary(rates),
                "extrapolated": True,
            }
        else:
            row["at_total"] = {"wall_s": row["wall_s"], "extrapolated": False}
        rows.append(row)
    return {
        "n": size.n,
        "cap_s": size.cap_s,
        "ideal_s": full_batch_floor(size.n),
        "least_any_split_s": least_seconds(size.n),
        "rows": rows,
    }


def model_figures() -> dict[str, float]:
    return {
        "round_trip": MODEL.round_trip,
        "overhead": MODEL.overhead,
        "per_save": MODEL.processing_of(QUICK_SAVE),
        "burst": BURST,
        "per_second": PER_SECOND,
    }


# --------------------------------------------------------------------------- report


def _row(size: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((r for r in size["rows"] if r["key"] == key), None)


def checks(data: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    out: list[tuple[str, str, str, bool, str]] = []
    for key, who in (("operator", "operator"), ("hook_spread", "call_batch(spread=True)")):
        for size in data["sizes"]:
            n = size["n"]
            row = _row(size, key)
            if row is None:
                continue
            wall = row["wall_s"]["median"]
            complete = row["finished"] == row["runs"]
            fast = _row(size, "fast_bitrix24")
            if n == 1000 and fast is not None:
                fast_wall = fast["at_total"]["wall_s"]["median"]
                out.append(
                    (
                        "B1R",
                        f"{who} / fast-bitrix24 at {n} saves, realistic latency",
                        f"<= {TARGET_VS_FAST:g}x",
                        complete and wall <= TARGET_VS_FAST * fast_wall,
                        f"{wall / fast_wall:.2f}x ({wall:.2f} s vs {fast_wall:.2f} s, medians)",
                    )
                )
            ideal = size["ideal_s"]
            out.append(
                (
                    "B1R",
                    f"{who} / ideal at {n} saves, realistic latency",
                    f"<= {TARGET_VS_IDEAL:g}x",
                    complete and wall <= TARGET_VS_IDEAL * ideal,
                    f"{wall / ideal:.2f}x ({wall:.2f} s vs {ideal:.2f} s); {wall / size['least_any_split_s']:.2f}x "
                    f"the least with any split ({size['least_any_split_s']:.2f} s)",
                )
            )
            out.append(
                (
                    "B1R",
                    f"{who}: 503s and answers per message at {n} saves, realistic latency",
                    "0; exactly one each",
                    row["s503"]["max"] == 0 and row["saved_once"]["min"] == n and row["duplicated"] == 0,
                    f"{row['s503']['max']:.0f} x 503; {row['saved_once']['min']:.0f}/{n} saved once, "
                    f"{row['duplicated']} duplicated",
                )
            )
    return out


def _wall(row: dict[str, Any], cap: float) -> str:
    done = [r["wall_s"] for r in row["raw"] if r["finished"]]
    ends = [_end(r, cap) for r in row["raw"] if not r["finished"]]
    parts = [_mmm(summary(done))] if done else []
    return ", ".join(parts + ends)


def _end(run: dict[str, Any], cap: float) -> str:
    """How an unfinished run ended: stopped at the cap, or given up by the contender itself."""
    if str(run["error"]).startswith("stopped at"):
        return f"> {cap:.0f} (stopped)"
    return f"failed after {run['wall_s']:.2f}"


def _count(stat: dict[str, float]) -> str:
    if stat["min"] == stat["max"]:
        return f"{stat['median']:.0f}"
    return f"{stat['median']:.0f} ({stat['min']:.0f}-{stat['max']:.0f})"


def section(entry: dict[str, Any], zero_latency: dict[str, Any] | None) -> list[str]:
    data = entry["data"]
    m = data["model"]
    mode = " (quick run: smaller sizes, fewer runs)" if entry.get("quick") else ""
    lines = [
        "## B1R: bulk save at a real portal's speed",
        "",
        f"_Measured {entry['measured_at']} in {entry['seconds']:.0f} s{mode}; 1-minute load average during the runs: "
        f"{_load(data)}._",
        "",
        "B1's batching contenders against the same standard-plan portal (burst "
        f"{m['burst']}, {m['per_second']:g} requests/s, the operating limit on), now answering at the speed of the "
        "sandbox's `realistic` latency model: a network round trip of "
        f"{m['round_trip']:.3f} s, the portal's own {m['overhead']:.3f} s per request, and "
        f"{m['per_save']:.3f} s per `imopenlines.message.quick.save`, the commands of a batch processed one after "
        "another (a batch of 50 takes "
        f"{m['round_trip'] + m['overhead'] + 50 * m['per_save']:.3f} s); requests run in parallel. Every run is a "
        "fresh worker process through the same TLS front, the contenders alternate (the order rotates every round), "
        "and the portal is reset before each run.",
        "",
        "![B1R chart](b1r.png)",
        "",
        "| Saves | Contender | runs | wall s, median (min-max) | HTTP requests | 503s | saved exactly once "
        "| longest idle, s | ideal s (least with any split) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in data["sizes"]:
        for row in size["rows"]:
            n = size["n"]
            at = row["at_total"]
            if at["extrapolated"]:
                wall = f"{_mmm(at['wall_s'])} * (measured on {row['n']}: {_wall(row, size['cap_s'])})"
            else:
                wall = _wall(row, size["cap_s"])
            lines.append(
                f"| {n} | {row['label']} | {row['runs']} | {wall} | {_count(row['requests'])} "
                f"| {_count(row['s503'])} | {_count(row['saved_once'])}/{row['n']} "
                f"| {_mmm(row['longest_idle_s'])} | {size['ideal_s']:.2f} ({size['least_any_split_s']:.2f}) |"
            )
    lines += [
        "",
        "*Ideal* is the least time the bucket and the per-command processing allow with unlimited concurrency, the "
        f"saves sent as `R = ceil(N / 50)` full batches: request `i` (0-based) can leave no earlier than "
        f"`s_i = max(0, (i + 1 - {m['burst']}) / {m['per_second']:g})` (the burst at once, then the drain rate) and "
        f"a request of `k` saves takes `{m['round_trip']:.3f} + {m['overhead']:.3f} + {m['per_save']:.3f} k` s, so "
        f"`ideal = max(0, (R - {m['burst']}) / {m['per_second']:g}) + "
        f"{m['round_trip'] + m['overhead'] + 50 * m['per_save']:.3f}`: the last request to leave still takes one "
        "full batch's time. In brackets, the stricter bound for any split into batches: the smallest `T` for which "
        "the requests that can finish by `T` hold all N saves, "
        f"`sum_i min(50, floor((T - s_i - {m['round_trip'] + m['overhead']:.3f}) / {m['per_save']:.3f})) >= N`; "
        "below the burst, more and smaller requests beat full batches (1,000 saves as 50 requests of 20), beyond it "
        "the bucket sets the pace and the two bounds nearly meet. Neither counts connection set-up (TLS handshakes) "
        "or the client's own work.",
        "",
        "*Longest idle* is the longest stretch in which the portal finished no request of the run (from the worker's "
        "start to its end).",
        "",
    ]
    extrapolated = [(s, r) for s in data["sizes"] for r in s["rows"] if r["at_total"]["extrapolated"]]
    for size, row in extrapolated:
        lines += [
            f"\\* {row['label']} sends its batches one after another, so its time grows linearly with the requests: "
            f"at {size['n']} it is measured on {row['n']} saves and continued at the rate it sustained, "
            f"`T({size['n']}) = T({row['n']}) + ({size['n']} - {row['n']}) / r`, r = {_mmm(row['at_total']['rate'])} "
            "saves/s.",
            "",
        ]
    stopped = [(s, r) for s in data["sizes"] for r in s["rows"] if r["finished"] < r["runs"]]
    for size, row in stopped:
        raw = [r for r in row["raw"] if not r["finished"]]
        lines += [
            f"- {row['label']} at {size['n']}, {len(raw)} of {row['runs']} run(s) did not finish: "
            + "; ".join(
                f"{r['saved_once']}/{r['n']} saved, {r['requests']} requests ({r['s503']} x 503)"
                + (
                    f", then idle for {r['longest_idle_s']:.0f} s"
                    if str(r["error"]).startswith("stopped at")
                    else f", {r['error']} after {r['wall_s']:.1f} s"
                )
                for r in raw
            )
            + "."
            + (FAST_BITRIX24_NOTE if row["key"] == "fast_bitrix24" else ""),
            "",
        ]
    lines += _why(data)
    if zero_latency:
        rows = {r["key"]: r for r in zero_latency["rows"]}
        cells = [
            f"{rows[k]['label']} {_mmm(rows[k]['at_total']['wall_s'])} s"
            for k in CONTENDERS
            if k in rows and not rows[k]["per_message"]
        ]
        lines += [f"For comparison, with no latency (B1, {zero_latency['total']} saves): " + "; ".join(cells) + ".", ""]
    return lines


#: Why fast-bitrix24 fails or stalls on a large run at this latency (read from its source, 1.8.14).
FAST_BITRIX24_NOTE = (
    " Two things in fast-bitrix24 meet a portal that takes 1.65 s per batch. Its leaky bucket books a request when "
    "the answer arrives, not when the request leaves, so while the first answers are on their way it sends more than "
    "the burst and draws 503s; eleven failed requests in a row end the call with `RuntimeError: All attempts to get "
    "data from server exhausted`. When it gets past that, its operating-time throttle adds up the `time.operating` of "
    "every answer (the portal's running total for the method over the last 10 minutes) as if each were that "
    "request's own time; once the figures add up to 480 s it waits until 10 minutes after the request that crossed. "
    "With no latency, answers come back at once and the totals stay near 0, so neither shows."
)


def _why(data: dict[str, Any]) -> list[str]:
    """What the figures say about the operator against fast-bitrix24 at 1,000 saves, when it misses the target."""
    size = next((s for s in data["sizes"] if s["n"] == 1000), None)
    if size is None:
        return []
    op, fast, spread = (_row(size, k) for k in ("operator", "fast_bitrix24", "hook_spread"))
    if op is None or fast is None:
        return []
    op_wall, fast_wall = op["wall_s"]["median"], fast["at_total"]["wall_s"]["median"]
    if op_wall <= TARGET_VS_FAST * fast_wall:
        return []
    floor = size["ideal_s"]
    text = (
        f"**Why the operator is not 0.8x fast-bitrix24 at 1,000 saves.** Both send the 1,000 saves as 20 full "
        f"batches, all at once (the burst allows {BURST}), so both sit on the full-batch floor of {floor:.2f} s, and "
        f"differ only by their own overhead: {op_wall - floor:+.2f} s against {fast_wall - floor:+.2f} s (medians). "
    )
    target = TARGET_VS_FAST * fast_wall
    if target < floor:
        text += f"0.8x fast-bitrix24 ({target:.2f} s) is below that floor: no client sending full batches gets there. "
    else:
        text += (
            f"0.8x fast-bitrix24 ({target:.2f} s) leaves {target - floor:.2f} s over that floor for 20 new TLS "
            "connections and all of the client's own work. "
        )
    text += "Only more, smaller requests go below the floor, since the portal processes a request's commands one after another"
    if spread is not None and spread["finished"]:
        spread_wall = spread["wall_s"]["median"]
        text += (
            f": `Bitrix24Hook.call_batch(..., spread=True)` sends 50 requests of 20 and takes {spread_wall:.2f} s, "
            f"{spread_wall / fast_wall:.2f}x fast-bitrix24 (the rest of its gap to the {size['least_any_split_s']:.2f} "
            "s bound is mostly the set-up of 50 TLS connections, and the client's own work, on two shared cores)"
        )
    text += (
        ". The operator keeps full batches: its 20 requests leave 30 of the burst to other callers of the portal, "
        "where 50 requests of 20 take the whole burst, and the bucket needs 25 s to drain again."
    )
    return [text, ""]


def _mmm(stat: dict[str, float], digits: int = 2) -> str:
    if stat["min"] == stat["max"]:
        return f"{stat['median']:.{digits}f}"
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"


def _load(data: dict[str, Any]) -> str:
    loads = [r["load_1min"] for s in data["sizes"] for row in s["rows"] for r in row["raw"]]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a"


def chart(b1r: dict[str, Any], b1: dict[str, Any] | None, path: Path) -> None:
    """Both regimes: B1's zero-latency times at 1,000, and the realistic times at each size, with the ideal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Per panel: a title, one item per contender, and the ideal.
    panels: list[tuple[str, list[_Item], tuple[float, float] | None]] = []
    if b1 is not None:
        zero = {r["key"]: r for r in b1["rows"]}
        items: list[_Item] = [(zero[k]["at_total"]["wall_s"] if k in zero else None, True, False) for k in CONTENDERS]
        panels.append((f"{b1['total']} saves, no latency (B1)", items, None))
    for size in b1r["sizes"]:
        rows = {r["key"]: r for r in size["rows"]}
        items = []
        for key in CONTENDERS:
            row = rows.get(key)
            if row is None:
                items.append((None, True, False))
            else:
                stat = row["at_total"]["wall_s"] if row["finished"] else None
                items.append((stat, bool(row["finished"]), bool(row["at_total"]["extrapolated"])))
        panels.append((f"{size['n']} saves, realistic latency", items, (size["ideal_s"], size["least_any_split_s"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels) + 2.2, 3.4), dpi=120, squeeze=False)
    colors = [{"operator": "#2fc6f6", "hook_spread": "#8fdcf9"}.get(key, "#9aa5b1") for key in CONTENDERS]
    for ax, (title, items, limits) in zip(axes[0], panels, strict=True):
        ideal, least = limits if limits is not None else (None, None)
        positions = list(range(len(items)))
        medians = [s["median"] if s else 0.0 for s, _, _ in items]
        lows = [s["median"] - s["min"] if s else 0.0 for s, _, _ in items]
        highs = [s["max"] - s["median"] if s else 0.0 for s, _, _ in items]
        ax.barh(positions, medians, xerr=[lows, highs], color=colors, capsize=3)
        values = [v for v in [*medians, ideal or 0.0, least or 0.0] if v > 0]
        bottom, top = min(values) / 2, max([m + h for m, h in zip(medians, highs, strict=True)] + values) * 4
        for y, (stat, finished, extrapolated) in enumerate(items):
            if stat is None:
                text = "did not finish" if not finished else "not measured"
                ax.text(0.02, y, text, va="center", fontsize=7, transform=ax.get_yaxis_transform())
            else:
                text = f"{stat['median']:.2f} s" + (" *" if extrapolated else "")
                ax.text((stat["median"] + highs[y]) * 1.15, y, text, va="center", fontsize=7)
        if ideal is not None:
            ax.axvline(ideal, color="#d9534f", linestyle="--", linewidth=1, label=f"ideal {ideal:.2f} s")
            ax.axvline(least, color="#d9534f", linestyle=":", linewidth=1, label=f"any split {least:.2f} s")
            ax.legend(loc="upper right", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(bottom, top)
        ax.set_yticks(positions, list(CONTENDERS.values()) if ax is axes[0][0] else [""] * len(items), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("seconds, log scale (median, min-max)", fontsize=8)
    fig.suptitle(f"B1 / B1R: bulk save on a standard-plan portal (burst {BURST}, {PER_SECOND:g} req/s)", fontsize=10)
    fig.text(0.01, 0.01, "* measured on fewer messages and continued at the rate it sustained", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
