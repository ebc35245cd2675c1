"""
Run the benchmarks and write ``benchmarks/RESULTS.md`` and ``benchmarks/b1.png``.

    python benchmarks/run.py                 # everything, about 55 minutes on 2 cores (B5 alone: 15)
    python benchmarks/run.py --quick         # a short smoke run: fewer repetitions, smaller sizes
    python benchmarks/run.py --only B1,B3    # some of them; the others keep their last results
    python benchmarks/run.py --only B1R,B2R  # B1 and B2 at a real portal's speed (about 13 and 6 minutes)
    python benchmarks/run.py --only B7       # keyset listing and the history export at a real portal's speed
    python benchmarks/run.py --report-only   # re-render RESULTS.md and the chart from results.json
    python benchmarks/run.py --only B5 --b5-limiter per-process   # B5 without the shared-limiter rows
    python benchmarks/run.py --only B6       # message events against sensors (about 10 minutes)

Raw results are kept in ``benchmarks/results.json``; RESULTS.md is rendered from it, so ``--only`` refreshes
part of the report without losing the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report
from benchmarks.common import BENCH_DIR, log, machine, versions

#: B1R and B2R: B1 and B2 on a portal answering at a real portal's speed (the sandbox's ``realistic`` latency).
#: B7: keyset listing and the open-line history export, at a real portal's speed.
ALL = ("B1", "B2", "B3", "B4", "B1R", "B2R", "B5", "B6", "B7")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer runs, smaller sizes)")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--output", type=Path, default=BENCH_DIR, help="where RESULTS.md and b1.png go")
    parser.add_argument("--report-only", action="store_true", help="only re-render the report from results.json")
    parser.add_argument(
        "--b5-limiter",
        choices=("both", "per-process", "shared"),
        default="both",
        help="B5: the per-process limiter, the shared one (redis_conn_id), or both",
    )
    args = parser.parse_args(argv)
    selected = [] if args.report_only else [name.strip().upper() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(ALL))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; use {', '.join(ALL)}")

    from benchmarks import b1_bulk_save, b2_waiting, b3_parse_cost, b4_overhead, b5_processes

    modules = {"B1": b1_bulk_save, "B2": b2_waiting, "B3": b3_parse_cost, "B4": b4_overhead, "B5": b5_processes}
    from benchmarks import b1r_realistic, b2r_realistic

    modules.update({"B1R": b1r_realistic, "B2R": b2r_realistic})
    from benchmarks import b6_message_events

    modules["B6"] = b6_message_events
    from benchmarks import b7_keyset_export

    modules["B7"] = b7_keyset_export
    options: dict[str, dict[str, object]] = {
        "B5": {"modes": b5_processes.MODES if args.b5_limiter == "both" else (args.b5_limiter,)}
    }
    results_path = args.output / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    home = Path(tempfile.mkdtemp(prefix="bitrix24-bench-home-"))
    started = time.monotonic()
    for name in ALL:
        if name not in selected:
            continue
        log(f"{name} starting")
        began = time.monotonic()
        data = modules[name].bench(home, quick=args.quick, **options.get(name, {}))
        results[name] = {
            "data": data,
            "quick": args.quick,
            "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round(time.monotonic() - began, 1),
        }
        log(f"{name} done in {results[name]['seconds']:.0f} s")
        results_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if selected:
        results["machine"] = machine()
        results["versions"] = versions()
        results_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if "B1" in results:
        b1_bulk_save.chart(results["B1"]["data"], args.output / "b1.png")
    if "B1R" in results:
        b1 = results.get("B1", {}).get("data")
        b1r_realistic.chart(results["B1R"]["data"], b1, args.output / "b1r.png")
    (args.output / "RESULTS.md").write_text(report.render(results))
    log(f"wrote {args.output / 'RESULTS.md'} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
