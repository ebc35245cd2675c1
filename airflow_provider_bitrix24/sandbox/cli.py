"""
``bitrix24-sandbox``: run the sandbox portal in the foreground.

Prints the webhook URL and an ``AIRFLOW_CONN_BITRIX24_DEFAULT='...'`` line ready to paste into a shell, writes the
port to ``--port-file`` once the socket is listening, and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_provider_bitrix24.sandbox.config import PRESETS, SandboxConfig
from airflow_provider_bitrix24.sandbox.latency import PRESETS as LATENCY_PRESETS
from airflow_provider_bitrix24.sandbox.server import SandboxPortal


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitrix24-sandbox", description="Run a local Bitrix24 portal (Open Lines) for tests and demos."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default: 0)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="standard", help="rate-limit plan")
    parser.add_argument("--burst", type=int, help="leaky-bucket threshold (overrides the preset)")
    parser.add_argument("--per-second", type=float, help="leaky-bucket drain rate (overrides the preset)")
    parser.add_argument(
        "--latency",
        choices=sorted(LATENCY_PRESETS),
        default="off",
        help="latency model: 'realistic' answers as slowly as the documented portal answers (default: off)",
    )
    parser.add_argument("--extra-sessions", type=int, default=0, help="additional chats with one session each")
    parser.add_argument(
        "--generated-sessions", type=int, default=0, help="generated open-line sessions with CRM activities"
    )
    parser.add_argument("--generated-messages", type=int, default=30, help="messages in each generated session")
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file once listening")
    parser.add_argument("--verbose", action="store_true", help="print one line per request (secrets masked)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the portal until SIGINT/SIGTERM; returns the exit status."""
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "extra_sessions": args.extra_sessions,
        "generated_sessions": args.generated_sessions,
        "generated_messages": args.generated_messages,
        "latency": args.latency,
        "verbose": args.verbose,
    }
    if args.burst is not None:
        overrides.update(burst=args.burst, rate_limit_enabled=True)
    if args.per_second is not None:
        overrides.update(per_second=args.per_second, rate_limit_enabled=True)
    try:
        config = SandboxConfig.preset(args.preset, **overrides)
    except ValueError as exc:
        build_parser().error(str(exc))

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    portal = SandboxPortal(config).start()
    try:
        print(f"Bitrix24 sandbox portal listening on {portal.base_url}")
        print(f"Webhook URL: {portal.webhook_url}")
        print(f"AIRFLOW_CONN_BITRIX24_DEFAULT='{portal.airflow_conn_json('webhook')}'")
        print("Press Ctrl+C to stop.", flush=True)
        if args.port_file is not None:
            temporary = args.port_file.with_name(args.port_file.name + ".tmp")
            temporary.write_text(f"{portal.config.port}\n")
            os.replace(temporary, args.port_file)
        while not stop.wait(0.2):
            pass
    finally:
        portal.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
