"""
B1: save 1,000 open-line messages as quick answers, five ways, against one portal on the standard plan.

Contenders (each in a worker process of its own, through the same TLS front):

``operator``
    this provider's ``SaveQuickAnswerOperator`` with the 1,000 ids (``batch`` requests of 50, paced);
``hook_per_message``
    ``Bitrix24Hook.call`` once per message (paced by the client's leaky bucket);
``httphook_per_message``
    Airflow's generic ``HttpHook`` once per message, with the retry arguments of ``HttpHook``'s own docstring
    (``wait_exponential()``, ``stop_after_attempt(10)``, ``retry_if_exception_type(Exception)``): the
    do-it-yourself way;
``fast_bitrix24``
    ``fast_bitrix24.Bitrix.call(method, [1,000 items])``, which batches and paces by itself;
``b24pysdk``
    the official SDK's ``Client.call_batches`` with 1,000 ``imopenlines.message.quick.save`` requests.

The one-call-per-message contenders are measured on fewer messages (the bucket lets 50 through, then 2 per
second, so 1,000 calls take 8 minutes each) and extrapolated to 1,000 with the rate they sustained after the
burst: ``T(1000) = T(n) + (1000 - n) / r``.

A separate, untimed probe per contender saves two messages with DEBUG logging on, then meets a 401 answer,
and reports whether the webhook code showed up in the log output or in the error's text and traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import time
import traceback
import urllib.request
from collections import Counter
from dataclasses import dataclass
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
    refused_by_bucket,
    run_worker,
    summary,
    worker_env,
)

B24_CONN = "bench_b24"
HTTP_CONN = "bench_http"


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    per_message: bool


CONTENDERS = (
    Contender("operator", "SaveQuickAnswerOperator (this provider)", False),
    Contender("hook_per_message", "Bitrix24Hook.call, one call per message", True),
    Contender("httphook_per_message", "HttpHook, one call per message (do-it-yourself)", True),
    Contender("fast_bitrix24", "fast-bitrix24 Bitrix.call with a list", False),
    Contender("b24pysdk", "b24pysdk Client.call_batches", False),
)


# --------------------------------------------------------------------------- worker side


def _items(chat: int, ids: list[int]) -> list[dict[str, int]]:
    return [{"CHAT_ID": chat, "MESSAGE_ID": m} for m in ids]


def _save(contender: str, chat: int, ids: list[int], base_url: str, user: int, code: str, attempts: int) -> int:
    """Save ``ids`` the contender's way; return how many saves the contender itself reported as done."""
    if contender == "operator":
        from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator

        operator = SaveQuickAnswerOperator(task_id="b1", chat_id=chat, message_id=ids, bitrix24_conn_id=B24_CONN)
        return len(operator.execute(context={}))
    if contender == "hook_per_message":
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        hook = Bitrix24Hook(bitrix24_conn_id=B24_CONN)
        return sum(1 for item in _items(chat, ids) if hook.call(QUICK_SAVE, item) is True)
    if contender == "httphook_per_message":
        import tenacity
        from airflow.providers.http.hooks.http import HttpHook

        http = HttpHook(method="POST", http_conn_id=HTTP_CONN)
        retry_args = {
            "wait": tenacity.wait_exponential(),
            "stop": tenacity.stop_after_attempt(attempts),
            "retry": tenacity.retry_if_exception_type(Exception),
        }
        done = 0
        for item in _items(chat, ids):
            response = http.run_with_advanced_retry(retry_args, endpoint=f"rest/{user}/{code}/{QUICK_SAVE}", json=item)
            done += response.json().get("result") is True
        return done
    if contender == "fast_bitrix24":
        from fast_bitrix24 import Bitrix

        bitrix = Bitrix(f"{base_url}/rest/{user}/{code}/", verbose=False)
        results = bitrix.call(QUICK_SAVE, _items(chat, ids))
        results = results if isinstance(results, list | tuple) else [results]
        return sum(1 for r in results if r is True)
    if contender == "b24pysdk":
        from b24pysdk import BitrixWebhook, Client

        host = base_url.split("://", 1)[1]
        client = Client(BitrixWebhook(domain=host, webhook_token=f"{user}/{code}"))
        requests = {f"m{m}": client.imopenlines.message.quick.save(chat_id=chat, message_id=m) for m in ids}
        batch = client.call_batches(requests).response.result
        return sum(1 for value in batch.result.values() if value is True)
    raise SystemExit(f"unknown contender {contender!r}")


def _probe(args: argparse.Namespace, ids: list[int]) -> dict[str, Any]:
    """Save two messages with DEBUG logs captured, then meet a 401; look for the webhook code in what came out."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    # A first save lets Airflow set up its logging (which replaces the root handlers) before the capture starts.
    _save(args.contender, args.chat, ids[:1], args.base_url, args.user, args.code, 1)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in ("urllib3", "requests", "aiohttp", "httpx", "httpcore", "fast_bitrix24", "b24pysdk", "airflow"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    _save(args.contender, args.chat, ids[1:3], args.base_url, args.user, args.code, 1)
    body = json.dumps({"method": "*", "kind": "error", "error": "NO_AUTH_FOUND", "status": 401, "count": 50})
    request = urllib.request.Request(
        f"{args.control_url}/_sandbox/faults", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).close()
    error_text = ""
    first_line = "no error raised"
    try:
        _save(args.contender, args.chat, ids[3:5], args.base_url, args.user, args.code, 1)
    except BaseException as exc:
        error_text = "".join(traceback.format_exception(exc))
        first_line = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
    captured = handler in root.handlers
    root.removeHandler(handler)
    logs = buffer.getvalue()
    if not captured or not logs:
        raise SystemExit("the log capture was removed or caught nothing")
    return {
        "secret_in_logs": args.code in logs,
        "secret_in_error": args.code in error_text,
        "error": first_line.replace(args.code, "<webhook code>"),
    }


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contender", required=True)
    parser.add_argument("--chat", type=int, required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--control-url", required=True)
    parser.add_argument("--user", type=int, required=True)
    parser.add_argument("--code", required=True)
    parser.add_argument("--attempts", type=int, default=10)
    parser.add_argument("--probe", action="store_true")
    args = parser.parse_args(argv)
    ids = list(range(args.first, args.first + args.n))
    if args.probe:
        emit(_probe(args, ids))
        return
    # Imports and first-use work happen before the clock starts, for every contender alike.
    _warm_up(args.contender)
    started = time.time()
    clock = time.perf_counter()
    done = _save(args.contender, args.chat, ids, args.base_url, args.user, args.code, args.attempts)
    emit({"wall_s": time.perf_counter() - clock, "started": started, "finished": time.time(), "reported": done})


def _warm_up(contender: str) -> None:
    """Imports and Airflow's first connection lookup, which a task process has done before ``execute``."""
    if contender in ("operator", "hook_per_message"):
        import airflow_provider_bitrix24.client.sync
        import airflow_provider_bitrix24.operators.quick_answer  # noqa: F401
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        Bitrix24Hook.get_connection(B24_CONN)
    elif contender == "httphook_per_message":
        import tenacity  # noqa: F401
        from airflow.providers.http.hooks.http import HttpHook

        HttpHook.get_connection(HTTP_CONN)
    elif contender == "fast_bitrix24":
        import fast_bitrix24  # noqa: F401
    elif contender == "b24pysdk":
        import b24pysdk  # noqa: F401


# --------------------------------------------------------------------------- runner side


def _extrapolate(log: list[list[Any]], run: dict[str, Any], n: int, target: int) -> dict[str, float]:
    """
    Continue a one-call-per-message run from ``n`` to ``target`` messages at the pace it sustained after the
    bucket's burst: the rate of successful saves, and the requests and 503s each save cost, in that phase.
    """
    calls = sorted((t, status) for t, method, status in log if method == QUICK_SAVE)
    ok_times = [t for t, status in calls if status == 200]
    if len(ok_times) <= BURST + 2:
        return {}
    steady_from = ok_times[BURST]
    steady = [(t, s) for t, s in calls if t >= steady_from]
    steady_ok = [t for t, s in steady if s == 200]
    rate = (len(steady_ok) - 1) / (steady_ok[-1] - steady_ok[0])
    per_save_requests = len(steady) / len(steady_ok)
    per_save_503 = sum(1 for _, s in steady if s == 503) / len(steady_ok)
    more = target - n
    return {
        "wall_s": run["wall_s"] + more / rate,
        "requests": run["requests"] + more * per_save_requests,
        "s503": run["s503"] + more * per_save_503,
        "rate": rate,
    }


def bench(home: Path, *, quick: bool) -> dict[str, Any]:
    total = 200 if quick else 1000
    small = 60 if quick else 150
    runs_batch = 2 if quick else 5
    runs_each = 1 if quick else 3
    with BenchPortal("standard", tls=True) as bench_portal:
        portal = bench_portal.portal
        seed = portal.seed
        chat, first = seed.bulk_chat_id, seed.bulk_message_ids.start
        connections = {B24_CONN: bench_portal.bitrix24_conn(), HTTP_CONN: bench_portal.http_conn()}
        env = worker_env(home, connections, bench_portal.ca_path)
        common = [
            "--chat",
            str(chat),
            "--first",
            str(first),
            "--base-url",
            bench_portal.base_url,
            "--control-url",
            portal.base_url,
            "--user",
            str(bench_portal.user_id),
            "--code",
            bench_portal.code,
        ]
        results: dict[str, Any] = {}
        plan = {
            c.key: (small if c.per_message else total, runs_each if c.per_message else runs_batch) for c in CONTENDERS
        }
        for round_no in range(max(r for _, r in plan.values())):
            for contender in CONTENDERS:
                n, runs = plan[contender.key]
                if round_no >= runs:
                    continue
                bench_portal.reset()
                log(f"B1 {contender.key}: run {round_no + 1}/{runs}, {n} messages")
                out = run_worker(
                    "b1_bulk_save",
                    ["--contender", contender.key, "--n", str(n), *common],
                    env,
                    timeout=900,
                )
                stats = bench_portal.stats()
                ids = set(range(first, first + n))
                per_message = Counter(a["message_id"] for a in portal.quick_answers() if a["message_id"] in ids)
                run = {
                    "n": n,
                    "wall_s": out["wall_s"],
                    "requests": stats["requests"],
                    "s503": stats["by_status"].get("503", 0),
                    "saved_once": sum(1 for m in ids if per_message[m] == 1),
                    "duplicated": sum(1 for m in ids if per_message[m] > 1),
                    "reported": out["reported"],
                    "would_be_refused": refused_by_bucket(t for t, _, _ in stats["log"]),
                }
                if contender.per_message:
                    run["extrapolated"] = _extrapolate(stats["log"], run, n, total)
                results.setdefault(contender.key, {"label": contender.label, "runs": []})["runs"].append(run)
                log(
                    f"B1 {contender.key}: {run['wall_s']:.2f} s, {run['requests']} requests, "
                    f"{run['s503']} x 503, {run['saved_once']}/{n} saved once"
                )
        for contender in CONTENDERS:
            bench_portal.reset()
            results[contender.key]["probe"] = run_worker(
                "b1_bulk_save", ["--contender", contender.key, "--n", "5", "--probe", *common], env, timeout=300
            )
    return _summarise(results, total)


def _summarise(results: dict[str, Any], total: int) -> dict[str, Any]:
    rows = []
    for contender in CONTENDERS:
        data = results[contender.key]
        runs = data["runs"]
        n = runs[0]["n"]
        row: dict[str, Any] = {
            "key": contender.key,
            "label": data["label"],
            "n": n,
            "runs": len(runs),
            "per_message": contender.per_message,
            "wall_s": summary([r["wall_s"] for r in runs]),
            "requests": summary([r["requests"] for r in runs]),
            "s503": summary([r["s503"] for r in runs]),
            "saved_once": summary([r["saved_once"] for r in runs]),
            "duplicated": max(r["duplicated"] for r in runs),
            "probe": data["probe"],
        }
        if contender.per_message:
            extra = [r["extrapolated"] for r in runs if r.get("extrapolated")]
            row["at_total"] = {
                "wall_s": summary([e["wall_s"] for e in extra]),
                "requests": summary([e["requests"] for e in extra]),
                "s503": summary([e["s503"] for e in extra]),
                "rate": summary([e["rate"] for e in extra]),
                "extrapolated": True,
            }
            needed = total
        else:
            row["at_total"] = {
                "wall_s": row["wall_s"],
                "requests": row["requests"],
                "s503": row["s503"],
                "extrapolated": False,
            }
            needed = math.ceil(total / 50)
        row["ideal_s"] = ideal_seconds(needed)
        row["ideal_requests"] = needed
        rows.append(row)
    return {"total": total, "burst": BURST, "per_second": PER_SECOND, "rows": rows}


def chart(b1: dict[str, Any], path: Path) -> None:
    """Median wall time at the full size, per contender, with min-max whiskers and the bucket's ideal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = b1["rows"]
    labels = [r["label"] + (" *" if r["per_message"] else "") for r in rows]
    medians = [r["at_total"]["wall_s"]["median"] for r in rows]
    lows = [m - r["at_total"]["wall_s"]["min"] for m, r in zip(medians, rows, strict=True)]
    highs = [r["at_total"]["wall_s"]["max"] - m for m, r in zip(medians, rows, strict=True)]
    waiting = [(r["ideal_s"], y) for y, r in enumerate(rows) if r["ideal_s"] > 0]
    colors = ["#2fc6f6" if r["key"] == "operator" else "#9aa5b1" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=120)
    positions = range(len(rows))
    ax.barh(positions, medians, xerr=[lows, highs], color=colors, capsize=3)
    ax.scatter(
        [x for x, _ in waiting],
        [y for _, y in waiting],
        marker="|",
        s=400,
        color="#d9534f",
        zorder=3,
        label="the bucket's floor for the requests needed (batches fit in the burst: no floor)",
    )
    for y, value, high in zip(positions, medians, highs, strict=True):
        label = f"{value:.2f} s" if value < 10 else f"{value:.0f} s"
        ax.text((value + high) * 1.25, y, label, va="center", fontsize=8)
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"seconds to save {b1['total']} quick answers (log scale; median, min-max)")
    ax.set_title(
        f"B1: {b1['total']} saves on a standard-plan portal (burst {b1['burst']}, {b1['per_second']:g} req/s)",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=7)
    fig.text(0.01, 0.01, "* measured on fewer messages, extrapolated at the rate sustained after the burst", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
