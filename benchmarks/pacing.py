"""
200 hook calls in a row from one process against the sandbox with the standard preset (burst 50, 2 req/s).

The portal's leaky bucket lets the first 50 through at once, then 2 per second, so the ideal wall time is
(200 - 50) / 2 = 75 s. Reports the measured time, its ratio to the ideal, and the QUERY_LIMIT_EXCEEDED answers the
portal sent (the goal is none).

    .venv/bin/python benchmarks/pacing.py [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bitrix24-bench-"))

    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook
    from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal

    with SandboxPortal(SandboxConfig.preset("standard")) as portal:
        os.environ["AIRFLOW_CONN_BITRIX24_BENCH"] = portal.airflow_conn_json("webhook")
        hook = Bitrix24Hook(bitrix24_conn_id="bitrix24_bench")
        hook.client  # noqa: B018 - build the client outside the timed part
        started = time.monotonic()
        for _ in range(args.calls):
            hook.call("server.time")
        elapsed = time.monotonic() - started
        stats = portal.stats()
    burst, rate = 50, 2.0
    ideal = max(0.0, (args.calls - burst) / rate)
    result = {
        "calls": args.calls,
        "elapsed_s": round(elapsed, 2),
        "ideal_s": ideal,
        "ratio_to_ideal": round(elapsed / ideal, 3) if ideal else None,
        "requests": stats["requests"],
        "query_limit_exceeded": stats["errors"].get("QUERY_LIMIT_EXCEEDED", 0),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
