"""Render ``benchmarks/results.json`` as ``benchmarks/RESULTS.md``."""

from __future__ import annotations

from typing import Any

B1_TARGET_SPEEDUP = 20.0
B2_TARGET_M = 1000
B2_TARGET_KB = 100.0
B3_TARGET = 1.15
B4_TARGET = 1.2
B5_TARGET = 1.1


def _s(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mmm(stat: dict[str, float], digits: int = 2, unit: str = "") -> str:
    """``median (min-max)``."""
    if stat["min"] == stat["max"]:
        return f"{stat['median']:.{digits}f}{unit}"
    return f"{stat['median']:.{digits}f}{unit} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"


def _count(stat: dict[str, float]) -> str:
    if stat["min"] == stat["max"]:
        return f"{stat['median']:.0f}"
    return f"{stat['median']:.0f} ({stat['min']:.0f}-{stat['max']:.0f})"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _stamp(entry: dict[str, Any]) -> str:
    mode = " (quick run: smaller sizes, fewer runs)" if entry.get("quick") else ""
    return f"_Measured {entry['measured_at']} in {entry['seconds']:.0f} s{mode}._"


# --------------------------------------------------------------------------- targets


def _b1_checks(b1: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    rows = {r["key"]: r for r in b1["rows"]}
    op = rows["operator"]
    op_wall = op["at_total"]["wall_s"]["median"]
    per_message = rows["hook_per_message"]["at_total"]["wall_s"]["median"]
    speedup = per_message / op_wall
    peers = {k: rows[k]["at_total"]["wall_s"]["median"] for k in ("httphook_per_message", "fast_bitrix24", "b24pysdk")}
    fastest = min(peers, key=lambda k: peers[k])
    ratio = op_wall / peers[fastest]
    checks = [
        (
            "B1",
            f"speed-up over one call per message ({b1['total']} saves)",
            f">= {B1_TARGET_SPEEDUP:g}x",
            speedup >= B1_TARGET_SPEEDUP,
            f"{speedup:.0f}x ({op_wall:.2f} s vs {per_message:.0f} s)",
        ),
        (
            "B1",
            "wall time against the fastest peer",
            "no slower",
            ratio <= 1.0,
            f"{ratio:.2f}x of {rows[fastest]['label']}: {_mmm(op['at_total']['wall_s'])} s vs "
            f"{_mmm(rows[fastest]['at_total']['wall_s'])} s",
        ),
        ("B1", "503s seen by the portal", "0", op["s503"]["max"] == 0, f"{op['s503']['max']:.0f} in every run"),
        (
            "B1",
            "messages saved exactly once",
            f"{b1['total']}",
            op["saved_once"]["min"] == b1["total"] and op["duplicated"] == 0,
            f"{op['saved_once']['min']:.0f}, {op['duplicated']} duplicated",
        ),
    ]
    return checks


def _b2_checks(b2: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    shared = [r for r in b2["rows"] if r["mode"] == "shared"]
    row = max(shared, key=lambda r: r["m"])
    m, interval = row["m"], b2["interval_s"]
    limit = b2["per_second"]
    kb = row["rss_per_wait_kib"] * 1.024
    return [
        ("B2", f"503s at M = {m}", "0", row["s503"] == 0, f"{row['s503']}"),
        (
            "B2",
            f"request rate at the portal at M = {m}",
            f"<= {limit:g} req/s (burst {b2['burst']})",
            row["rps"] <= limit and row["would_be_refused"] == 0,
            f"{row['rps']:.2f} req/s; peak {row['peak_10s']} in any 10 s; "
            f"{row['would_be_refused']} the bucket would refuse",
        ),
        (
            "B2",
            f"p95 from appearance to trigger event at M = {m}",
            f"<= 2 polling rounds ({2 * interval:g} s)",
            row["latency_p95_s"] is not None and row["latency_p95_s"] <= 2 * interval and row["detected"] == m,
            f"{_s(row['latency_p95_s'], 1)} s ({row['detected']}/{m} detected)",
        ),
        (
            "B2",
            f"peak RSS per trigger at M = {m}",
            f"< {B2_TARGET_KB:g} KB",
            kb < B2_TARGET_KB,
            f"{kb:.1f} KB",
        ),
    ]


def _b3_checks(b3: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    checks = []
    for label, data in sorted(b3.items(), reverse=True):
        examples = [r for r in data["rows"] if r["dag_file"].startswith("example_")]
        worst = max(examples, key=lambda r: r["ratio_wall"])
        checks.append(
            (
                "B3",
                f"DAG-parse time, example DAG / core-only DAG ({label} {data['airflow']})",
                f"<= {B3_TARGET:g}x",
                worst["ratio_wall"] <= B3_TARGET,
                f"{worst['ratio_wall']:.2f}x at worst ({worst['dag_file']})",
            )
        )
    return checks


def _b4_checks(b4: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    us = b4["per_call_us"]
    return [
        (
            "B4",
            "per-call time, hook.call / requests.Session.post",
            f"<= {B4_TARGET:g}x",
            b4["ratio_hook"] <= B4_TARGET,
            f"{b4['ratio_hook']:.2f}x ({us['hook']['median']:.0f} us vs {us['raw']['median']:.0f} us)",
        )
    ]


def _b5_checks(b5: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    shared = [r for r in b5["rows"] if r["mode"] == "shared"]
    if not shared:
        return []
    worst = max(shared, key=lambda r: r["ratio"] or 0.0)
    return [
        (
            "B5",
            "503s with the shared limiter, at every P",
            "0",
            all(r["s503"] == 0 for r in shared),
            ", ".join(f"P={r['p']}: {r['s503']}" for r in shared),
        ),
        (
            "B5",
            "calls failed with the shared limiter, at every P",
            "0",
            all(r["failed"] == 0 for r in shared),
            ", ".join(f"P={r['p']}: {r['failed']}" for r in shared),
        ),
        (
            "B5",
            "wall time / ideal with the shared limiter, at every P",
            f"<= {B5_TARGET:g}x",
            all(r["ratio"] <= B5_TARGET for r in shared if r["ratio"] is not None),  # no ratio: all fit the burst
            f"{_s(worst['ratio'])}x at worst (P={worst['p']}: {worst['wall_s']:.1f} s vs {worst['ideal_s']:.1f} s)",
        ),
    ]


# --------------------------------------------------------------------------- sections


def _b1_section(entry: dict[str, Any]) -> list[str]:
    b1 = entry["data"]
    total = b1["total"]
    rows = b1["rows"]
    lines = [
        "## B1: bulk save",
        "",
        _stamp(entry),
        "",
        f"Save {total} open-line messages (the bulk chat of the sandbox) as quick answers on a portal with the standard "
        f"plan's limits: a leaky bucket of {b1['burst']} requests draining at {b1['per_second']:g} per second, and the "
        "operating limit of 480 s per method per 10 minutes. Every contender runs in a fresh worker process of its own "
        "(imports and the first connection lookup done before the clock starts) against the same portal, reset to "
        "its seed data before each run. The sandbox is served through a local TLS front (a self-signed certificate "
        "from `trustme`, trusted through `REQUESTS_CA_BUNDLE`/`SSL_CERT_FILE` or the connection's `verify` extra), "
        "because `b24pysdk` builds `https://` URLs itself; every contender goes through the same front.",
        "",
        "![B1 chart](b1.png)",
        "",
        f"| Contender | measured on | runs | wall s, median (min-max) | HTTP requests | 503s at the portal "
        f"| saved exactly once | wall s at {total}, median (min-max) | ideal at {total} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        at = row["at_total"]
        mark = " *" if at["extrapolated"] else ""
        ideal = f"{row['ideal_s']:.0f} s ({row['ideal_requests']} requests)"
        lines.append(
            f"| {row['label']} | {row['n']} | {row['runs']} | {_mmm(row['wall_s'])} | {_count(row['requests'])} "
            f"| {_count(row['s503'])} | {_count(row['saved_once'])}/{row['n']} | {_mmm(at['wall_s'])}{mark} | {ideal} |"
        )
    lines += [
        "",
        f"\\* Measured on {rows[1]['n']} messages and extrapolated to {total}: one call per message cannot beat the "
        f"bucket, which lets {b1['burst']} calls through and then {b1['per_second']:g} per second, so {total} calls "
        f"need at least {max(0.0, (total - b1['burst']) / b1['per_second']):.0f} s. The extrapolation continues each "
        f"run at the rate of successful saves it sustained after the burst: `T({total}) = T(n) + ({total} - n) / r`; "
        "requests and 503s are continued the same way. Sustained rates: "
        + "; ".join(
            f"{r['label']} {_mmm(r['at_total']['rate'])} saves/s" for r in rows if r["at_total"].get("extrapolated")
        )
        + ".",
        "",
        "*Ideal* is the least time the portal's bucket allows for the requests that approach needs "
        f"(`max(0, (requests - {b1['burst']}) / {b1['per_second']:g})`): batching needs "
        f"{rows[0]['ideal_requests']} requests, which fit in the burst, so its floor is the portal's own processing "
        "time.",
        "",
        "Errors and secrets (an untimed probe per contender: two saves with DEBUG logging captured, then a portal "
        "answering 401 `NO_AUTH_FOUND`):",
        "",
        "| Contender | webhook code in DEBUG logs | webhook code in the error or its traceback | what the caller gets |",
        "|---|---|---|---|",
    ]
    for row in rows:
        probe = row["probe"]
        lines.append(
            f"| {row['label']} | {'**yes**' if probe['secret_in_logs'] else 'no'} "
            f"| {'**yes**' if probe['secret_in_error'] else 'no'} | `{probe['error']}` |"
        )
    lines.append("")
    return lines


def _b2_section(entry: dict[str, Any]) -> list[str]:
    b2 = entry["data"]
    interval = b2["interval_s"]
    lines = [
        "## B2: waiting",
        "",
        _stamp(entry),
        "",
        f"M deferred waits, one per open-line session, in one event loop (one triggerer) against one standard-plan "
        f"portal ({b2['burst']} burst, {b2['per_second']:g} req/s); every wait polls every {interval:g} s. Once all "
        "waits run, one operator message appears in each session, spread over two polling intervals starting 2 s "
        "later; each wait ends when it sees its message. *shared* is this provider's `SessionHistoryTrigger` (one "
        "poller per connection packing due polls into `batch` requests of 50, paced by the client's bucket). "
        "*independent* is one poller per session the way `HttpSensorTrigger` polls (a new `aiohttp` session and "
        "`HttpAsyncHook.run` per poll, an immediate new try after an error, a sleep of the interval after a 'not "
        "yet'), plus the content check a `response_check` would make: `HttpSensor` cannot defer with a "
        "`response_check`, and `HttpSensorTrigger` alone fires on any 200. Latencies are measured from the earliest "
        "moment a message can appear, so they are upper bounds. RSS is the worker's peak resident memory during "
        "the run minus its resident memory after a warm-up wait, divided by M. One run per row.",
        "",
        "| M | waits | requests/s at the portal (limit "
        f"{b2['per_second']:g}) | peak in 1 s / 10 s | 503s | detected | latency median / p95 / max, s "
        "| peak RSS per wait |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in b2["rows"]:
        failed = f", {row['failed']} failed" if row.get("failed") else ""
        lines.append(
            f"| {row['m']} | {row['mode']} | {row['rps']:.2f} ({row['ok_rps']:.2f} answered 200) "
            f"| {row['peak_1s']} / {row['peak_10s']} | {row['s503']} | {row['detected']}/{row['m']}{failed} "
            f"| {_s(row['latency_median_s'], 1)} / {_s(row['latency_p95_s'], 1)} / {_s(row['latency_max_s'], 1)} "
            f"| {row['rss_per_wait_kib'] * 1.024:.1f} KB |"
        )
    lines.append("")
    return lines


def _b3_section(entry: dict[str, Any]) -> list[str]:
    lines = [
        "## B3: DAG-parse cost",
        "",
        _stamp(entry),
        "",
        "Each figure is a fresh interpreter executing one DAG file, as a DAG processor does, timed from before the "
        "file's first import (so `import airflow` counts) to the end of the module; files are measured in "
        "interleaved rounds. The baseline is `benchmarks/dags/bench_core_operators.py`: the same shape (doc, params, "
        "default_args, two chained tasks) with core operators only. *Own imports* is the self time of the "
        "`airflow_provider_bitrix24` modules under `python -X importtime`.",
        "",
    ]
    for label, data in sorted(entry["data"].items(), reverse=True):
        lines += [
            f"**{label} ({data['airflow']})**, {data['rounds']} rounds:",
            "",
            "| DAG file | wall s, median (min-max) | CPU s, median | ratio to baseline (wall / CPU) | own imports |",
            "|---|---|---|---|---|",
        ]
        for row in data["rows"]:
            own = f"{row['own_ms']:.1f} ms" if "own_ms" in row else "-"
            lines.append(
                f"| `{row['dag_file']}` | {_mmm(row['wall_s'], 3)} | {row['cpu_s']['median']:.3f} "
                f"| {row['ratio_wall']:.3f} / {row['ratio_cpu']:.3f} | {own} |"
            )
        lines.append("")
    return lines


def _b4_section(entry: dict[str, Any]) -> list[str]:
    b4 = entry["data"]
    us = b4["per_call_us"]
    return [
        "## B4: per-call overhead",
        "",
        _stamp(entry),
        "",
        "`server.time` against the sandbox with its limits off (and a connection rate limit too high to pace), "
        f"from {b4['workers']} worker process(es), each alternating {b4['rounds']} blocks of {b4['calls']} calls per "
        "way; both ways parse the JSON answer. The portal's own time is in both figures.",
        "",
        "| Way | per call, us, median (min-max) | ratio to requests |",
        "|---|---|---|",
        f"| `requests.Session.post` + `.json()` | {_mmm(us['raw'], 0)} | 1.00 |",
        f"| `Bitrix24Client.call` (the client alone) | {_mmm(us['client'], 0)} | {b4['ratio_client']:.2f} |",
        f"| `Bitrix24Hook.call` | {_mmm(us['hook'], 0)} | {b4['ratio_hook']:.2f} |",
        "",
        f"Ratio per worker process (hook / requests): {_mmm(b4['ratio_hook_per_worker'])}.",
        "",
    ]


def _b5_section(entry: dict[str, Any]) -> list[str]:
    b5 = entry["data"]
    labels = {"per-process": "per process (no `redis_conn_id`)", "shared": "shared through Redis (`redis_conn_id`)"}
    lines = [
        "## B5: many processes, one portal",
        "",
        _stamp(entry),
        "",
        f"P worker processes (each a fresh interpreter with its own `Bitrix24Hook` on the same webhook connection, "
        f"as Celery workers or pods are) each save {b5['calls']} messages with one "
        "`imopenlines.message.quick.save` call per message, all starting at once, against one portal with the "
        f"standard limits ({b5['burst']} burst, {b5['per_second']:g} req/s per portal). *Ideal* is the least time "
        f"the portal's bucket allows for the P x {b5['calls']} calls: `max(0, (P x {b5['calls']} - {b5['burst']}) / "
        f"{b5['per_second']:g})`. A call fails when it still meets the limit after its retries. One run per row.",
        "",
        "| limiter | P | calls | HTTP requests | 503s at the portal | failed calls | saved once | wall s | ideal s "
        "| wall / ideal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in b5["rows"]:
        lines.append(
            f"| {labels.get(row['mode'], row['mode'])} | {row['p']} | {row['calls']} | {row['requests']} "
            f"| {row['s503']} | {row['failed']} | {row['saved_once']}/{row['calls']} | {row['wall_s']:.1f} "
            f"| {row['ideal_s']:.1f} | {_s(row['ratio'])} |"
        )
    if any(row["failed"] for row in b5["rows"]):
        lines += [
            "",
            "Where calls failed, wall / ideal can fall below 1: the ideal counts every call, but a failed call's save "
            "never happened.",
        ]
    modes = {row["mode"] for row in b5["rows"]}
    if "shared" not in modes:
        reason = b5.get("skipped", {}).get("shared", "not run (`--b5-limiter per-process`)")
        lines += ["", f"Rows with the shared limiter: {reason}."]
    lines.append("")
    return lines


def _notes(results: dict[str, Any], misses: list[tuple[str, str, str, bool, str]]) -> list[str]:
    lines = ["## Where the provider is not ahead", ""]
    b1 = results.get("B1", {}).get("data")
    found = False
    for check in misses:
        found = True
        if check[0] == "B1" and "fastest peer" in check[1] and b1:
            lines.append(
                f"- **B1, against the fastest batching peer ({check[4]}).** The whole save takes well under a "
                "second either way; the gap is the time of a few batch round trips. `fast-bitrix24` sends its "
                "batch requests concurrently (up to 50 in flight), this provider sends them one after another on "
                "purpose: the portal's documentation asks clients not to run parallel request series from one IP, "
                "and `imopenlines.message.quick.save` is not protected against concurrent duplicates. On a real "
                "portal, where a batch of 50 saves takes far longer than on loopback, concurrency would widen the "
                "gap; the 20 requests still fit in the burst, so neither approach waits for the bucket."
            )
        else:
            lines.append(f"- **{check[0]}, {check[1]}**: measured {check[4]}, target {check[2]}.")
    if b1:
        rows = {r["key"]: r for r in b1["rows"]}
        hook, diy = rows["hook_per_message"]["at_total"], rows["httphook_per_message"]["at_total"]
        if diy["wall_s"]["median"] < hook["wall_s"]["median"]:
            found = True
            lines.append(
                f"- **B1, one call per message: the do-it-yourself `HttpHook` loop is "
                f"{hook['wall_s']['median'] / diy['wall_s']['median'] - 1:.1%} faster than `Bitrix24Hook.call`** "
                f"({diy['wall_s']['median']:.0f} s vs {hook['wall_s']['median']:.0f} s for {b1['total']} calls). "
                "The hook paces itself at 98 % of the portal's drain rate, so it never meets the limit; the loop "
                "sends at whatever rate it likes, the portal refuses what is over the limit, and the retry after "
                f"each refusal lands just when the bucket has room: about {diy['s503']['median']:.0f} refused "
                f"requests (503) for {b1['total']} saves, against none. Batching, not pacing, is what makes the "
                "provider fast; the pacing is what keeps it from ever drawing a 503."
            )
    if not found:
        lines.append("- Every target is met in this run.")
    lines.append("")
    return lines


def _realistic() -> tuple[dict[str, Any], dict[str, Any]]:
    """Target checks and section builders of B1R and B2R (at a real portal's speed), given all results."""
    from benchmarks import b1r_realistic, b2r_realistic, b6_message_events, b7_keyset_export

    builders = {
        "B1R": b1r_realistic.checks,
        "B2R": b2r_realistic.checks,
        "B6": b6_message_events.checks,
        "B7": b7_keyset_export.checks,
    }
    sections = {
        "B1R": lambda entry, results: b1r_realistic.section(entry, results.get("B1", {}).get("data")),
        "B2R": lambda entry, results: b2r_realistic.section(entry),
        "B6": lambda entry, results: b6_message_events.section(entry),
        "B7": lambda entry, results: b7_keyset_export.section(entry),
    }
    return builders, sections


def render(results: dict[str, Any]) -> str:
    checks: list[tuple[str, str, str, bool, str]] = []
    builders = {"B1": _b1_checks, "B2": _b2_checks, "B3": _b3_checks, "B4": _b4_checks, "B5": _b5_checks}
    realistic_checks, realistic_sections = _realistic()
    builders.update(realistic_checks)
    for name, build in builders.items():
        if name in results:
            checks += build(results[name]["data"])
    m = results.get("machine", {})
    v = results.get("versions", {})
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python benchmarks/run.py`; `--quick` for a smoke run, `--only B1,B3` for some). "
        "All contenders of a benchmark run against the same sandbox portal in the same session; timings are "
        "never asserted by the test suite, only reported here. Raw numbers: `benchmarks/results.json`.",
        "",
        "## Machine and versions",
        "",
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB; {m.get('os', '?')}; "
        f"Python {m.get('python', '?')}.",
        "",
        ", ".join(f"{name} {version}" for name, version in v.items()) + ".",
        "",
        "## Targets",
        "",
        "| | Figure | Target | Measured | Met |",
        "|---|---|---|---|---|",
    ]
    for bench, figure, target, ok, measured in checks:
        lines.append(f"| {bench} | {figure} | {target} | {measured} | {_yes(ok)} |")
    lines.append("")
    sections = {"B1": _b1_section, "B2": _b2_section, "B3": _b3_section, "B4": _b4_section, "B5": _b5_section}
    for name, section in sections.items():
        if name in results:
            lines += section(results[name])
    for name, realistic_section in realistic_sections.items():
        if name in results:
            lines += realistic_section(results[name], results)
    lines += _notes(results, [c for c in checks if not c[3]])
    return "\n".join(lines)
