"""
A task process that makes hook calls on command: ``python -m tests.support.hook_process CONN_ID [--fail-variable-writes]``.

It stands for an Airflow worker process (or a long-lived one, such as a triggerer): each ``call`` line on stdin
builds a new ``Bitrix24Hook(bitrix24_conn_id=CONN_ID)``, as a new task would, and calls ``profile``; ``exit`` ends
it. It answers on stdout with lines ``HOOKPROC <json>``: ``{"event": "ready"}`` once Airflow and the provider are
imported, then one ``{"event": "call", "ok": ..., ...}`` per call.

``--fail-variable-writes`` makes every Airflow Variable write of this process fail, as when the metadata database
or the API server refuses it.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

PREFIX = "HOOKPROC "


def _say(payload: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _fail_variable_writes() -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the metadata database refused the write (test)")

    from airflow.models.variable import Variable as VariableModel

    VariableModel.set = staticmethod(refuse)  # type: ignore[method-assign]
    try:
        from airflow.sdk import Variable as SdkVariable
    except ImportError:  # Airflow 2
        return
    SdkVariable.set = staticmethod(refuse)  # type: ignore[method-assign]


def _call(conn_id: str) -> dict[str, Any]:
    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

    try:
        profile = Bitrix24Hook(bitrix24_conn_id=conn_id).call("profile")
    except Exception as exc:
        return {
            "event": "call",
            "ok": False,
            "error_type": type(exc).__name__,
            "error_code": getattr(exc, "code", None),
            "error": str(exc),
            "traceback": "".join(traceback.format_exception(exc))[-4000:],
        }
    return {"event": "call", "ok": True, "user": profile.get("ID") if isinstance(profile, dict) else None}


def main(argv: list[str]) -> None:
    conn_id = argv[1]
    import airflow_provider_bitrix24.client.sync
    import airflow_provider_bitrix24.hooks.bitrix24  # noqa: F401

    if "--fail-variable-writes" in argv[2:]:
        _fail_variable_writes()
    _say({"event": "ready"})
    for line in sys.stdin:
        command = line.strip()
        if command == "call":
            _say(_call(conn_id))
        elif command == "exit":
            break


if __name__ == "__main__":
    main(sys.argv)
