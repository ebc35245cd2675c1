"""
Scripted failures, so clients can be tested against everything a real portal (or the network) does.

A fault targets one method (lower case) or ``"*"`` for any ``/rest/`` method. Faults are consumed first in,
first out by the HTTP requests they match; ``count`` makes one fault apply to that many requests. Kinds:

``error``
    answer ``{"error", "error_description"}`` with ``status`` without running the method; with
    ``in_batch=True`` it applies to matching commands inside a ``batch`` instead (they land in ``result_error``);
``hang``
    accept the request and send nothing until the portal stops or ``delay`` seconds pass, then close the socket;
``slow``
    run the method, then wait ``delay`` seconds (5 by default) before answering;
``drop_after``
    run the method (its effects happen), then close the socket without an answer;
``drop_before``
    close the socket without running the method;
``raw``
    answer ``status`` (502 by default) with the literal ``body`` and ``content_type`` (``text/html`` by default)
    without running the method; with ``size`` the body is that many bytes (``body`` repeated, streamed in
    chunks).

For ``error`` faults ``status`` and ``description`` default to the documented status and text of ``error``
(``INTERNAL_SERVER_ERROR`` by default); a code the portal does not define gets 400 and "Injected fault".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from airflow_provider_bitrix24.sandbox.errors import standard_description, standard_status

KINDS = ("error", "hang", "slow", "drop_after", "drop_before", "raw")


@dataclass
class Fault:
    method: str
    kind: str
    count: int = 1
    error: str = "INTERNAL_SERVER_ERROR"
    status: int | None = None
    description: str | None = None
    delay: float | None = None
    body: str = ""
    content_type: str = "text/html"
    size: int | None = None
    in_batch: bool = False

    @property
    def error_status(self) -> int:
        return self.status if self.status is not None else standard_status(self.error)

    @property
    def error_description(self) -> str:
        if self.description is not None:
            return self.description
        return standard_description(self.error) or "Injected fault"

    @property
    def raw_status(self) -> int:
        return self.status if self.status is not None else 502


def make_fault(method: str, kind: str, count: int = 1, **options: Any) -> Fault:
    """
    Validate and build a fault.

    :raises ValueError: for an unknown kind or option.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(KINDS)}")
    allowed = {"error", "status", "description", "delay", "body", "content_type", "size", "in_batch"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown fault options {sorted(unknown)}")
    values = {k: v for k, v in options.items() if v is not None}
    if "status" in values:
        values["status"] = int(values["status"])
    if "delay" in values:
        values["delay"] = float(values["delay"])
    if "size" in values:
        values["size"] = int(values["size"])
    if values.get("in_batch") and kind != "error":
        raise ValueError("in_batch applies to faults of kind 'error' only")
    if int(count) < 1:
        raise ValueError("count must be at least 1")
    return Fault(method=str(method).lower(), kind=kind, count=int(count), **values)


class FaultQueue:
    """Pending faults, consumed in order by matching requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, *, in_batch: bool = False) -> Fault | None:
        """Consume one use of the first fault matching ``method`` (top-level requests or batch commands)."""
        with self._lock:
            for fault in self._faults:
                if fault.in_batch == in_batch and fault.method in (method, "*"):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
            return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
