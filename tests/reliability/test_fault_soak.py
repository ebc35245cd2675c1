"""
Thousands of quick-answer saves through ``SaveQuickAnswerOperator`` while the portal fails one time in ten.

The portal's fault queue is replaced by a seeded schedule: every HTTP request has a 10 % chance of meeting the
next of five faults (503 ``QUERY_LIMIT_EXCEEDED``, 500 ``INTERNAL_SERVER_ERROR``, 429 ``OPERATION_TIME_LIMIT``
with a short reset, the connection dropped after the portal processed the request, an answer slower than the
client's timeout), and every ``quick.save`` command inside a batch a 10 % chance of failing on its own (500 or
429). The messages are saved by many task runs of mixed sizes (one message, a few, a full batch), so that both
the single-call and the batch paths meet faults.

Airflow's task retries are applied the way the task runner applies them: a try that raised anything but
``AirflowFailException`` / ``AirflowSkipException`` is followed by a new try (a new operator instance) until the
task's ``retries`` are used up. Every task must succeed, and the portal must hold exactly one quick answer per
message.
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_bitrix24.client import core
from airflow_provider_bitrix24.client.retry import RetryPolicy
from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator
from airflow_provider_bitrix24.sandbox.faults import Fault, FaultQueue, make_fault
from airflow_provider_bitrix24.sandbox.state import SEED
from tests.reliability.canary import LeakScan, webhook_conn

QUICK_SAVE = "imopenlines.message.quick.save"
FAULT_RATE = 0.10
#: The client gives up on an answer after this long; the slow fault answers later. Long enough that a loaded
#: machine never turns a normal answer into a timeout (that would add a request and shift the seeded faults).
TIMEOUT = 2.0
SLOW = 3.0
#: Stands for the portal's 60 s execution cut-off, scaled down like the timeout.
CUTOFF = 3.5
RETRIES = 3
#: How long a method refused without a reset time is held (10 s against a real portal).
UNKNOWN_BLOCK = 0.3

HTTP_FAULTS: tuple[dict[str, Any], ...] = (
    {"kind": "error", "error": "QUERY_LIMIT_EXCEEDED", "status": 503},
    {"kind": "error", "error": "INTERNAL_SERVER_ERROR", "status": 500},
    {"kind": "error", "error": "OPERATION_TIME_LIMIT", "status": 429},
    {"kind": "drop_after"},
    {"kind": "slow", "delay": SLOW},
)
COMMAND_FAULTS: tuple[dict[str, Any], ...] = (
    {"kind": "error", "error": "INTERNAL_SERVER_ERROR", "in_batch": True},
    {"kind": "error", "error": "OPERATION_TIME_LIMIT", "in_batch": True},
)


def _label(spec: dict[str, Any]) -> str:
    return str(spec.get("error", spec["kind"]))


class FaultSchedule(FaultQueue):
    """
    A fault queue that, besides faults injected explicitly, fails a seeded random share of requests and of
    ``quick.save`` batch commands, cycling through the fault kinds so that each one shows up early.
    """

    def __init__(self, rate: float, seed: int) -> None:
        super().__init__()
        self.rate = rate
        self.random = random.Random(seed)
        self.http: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.requests = 0
        self._http_kinds = itertools.cycle(HTTP_FAULTS)
        self._command_kinds = itertools.cycle(COMMAND_FAULTS)
        self._schedule_lock = threading.Lock()

    def take(self, method: str, *, in_batch: bool = False) -> Fault | None:
        explicit = super().take(method, in_batch=in_batch)
        if explicit is not None:
            return explicit
        if in_batch and method != QUICK_SAVE:
            return None
        with self._schedule_lock:
            if not in_batch:
                self.requests += 1
            if self.random.random() >= self.rate:
                return None
            spec = next(self._command_kinds if in_batch else self._http_kinds)
            (self.commands if in_batch else self.http)[_label(spec)] += 1
        options = {k: v for k, v in spec.items() if k != "kind"}
        return make_fault(method, spec["kind"], **options)


def run_task(
    make: Callable[[int], SaveQuickAnswerOperator], retries: int, scan: LeakScan, name: str
) -> tuple[Any, int]:
    """Run a task with Airflow's retry semantics; return its result and the number of tries it took."""
    for try_number in range(1, retries + 2):
        operator = make(try_number)
        try:
            result = operator.execute(context={})
        except (AirflowFailException, AirflowSkipException) as exc:
            scan.exception(f"{name} try {try_number}", exc)
            raise
        except Exception as exc:
            scan.exception(f"{name} try {try_number}", exc)
            if try_number > retries:
                raise
            continue
        scan.add(f"{name} return value", result)
        return result, try_number
    raise AssertionError("unreachable")


def _chunks(ids: list[int], sizes: tuple[int, ...]) -> Iterator[list[int]]:
    position = 0
    for size in itertools.cycle(sizes):
        if position >= len(ids):
            return
        yield ids[position : position + size]
        position += size


def _soak(
    portal: Any,
    monkeypatch: pytest.MonkeyPatch,
    scan: LeakScan,
    *,
    total: int,
    sizes: tuple[int, ...],
    seed: int,
    rate_limited: bool,
    client_retries: int,
) -> dict[str, Any]:
    monkeypatch.setattr(
        core,
        "RetryPolicy",
        functools.partial(RetryPolicy, base_delay=0.01, max_delay=0.05, jitter=0.0, server_cutoff=CUTOFF),
    )
    # A refusal without a time block holds the method 10 s on a real portal; scaled down like the timeout.
    monkeypatch.setattr(core, "UNKNOWN_BLOCK", UNKNOWN_BLOCK)
    schedule = FaultSchedule(FAULT_RATE, seed)
    monkeypatch.setattr(portal.engine, "faults", schedule)
    # Short operating windows, so that a method blocked by OPERATION_TIME_LIMIT is reported to unblock soon.
    portal.configure(operating_window=2.0, operating_bucket=0.5)
    if rate_limited:
        portal.configure(rate_limit_enabled=True, burst=50, per_second=2.0)
        rate_limit = {"burst": 50, "per_second": 2.0}
    else:
        rate_limit = {"burst": 1_000_000, "per_second": 1_000_000.0}
    conn_id = webhook_conn(
        monkeypatch, portal, "rel_soak", timeout=TIMEOUT, max_retries=client_retries, rate_limit=rate_limit
    )
    seed_answers = len(portal.quick_answers())
    ids = list(SEED.bulk_message_ids[:total])
    tries: Counter[int] = Counter()
    for number, chunk in enumerate(_chunks(ids, sizes)):

        def make(try_number: int, chunk: list[int] = chunk, number: int = number) -> SaveQuickAnswerOperator:
            return SaveQuickAnswerOperator(
                task_id=f"save_{number}",
                chat_id=SEED.bulk_chat_id,
                message_id=chunk,
                bitrix24_conn_id=conn_id,
                retries=RETRIES,
            )

        saved, used = run_task(make, RETRIES, scan, f"soak task {number}")
        assert saved == chunk
        tries[used] += 1

    answers = portal.quick_answers()
    per_message = Counter(a["message_id"] for a in answers)
    assert [m for m in ids if per_message[m] != 1] == []
    assert len(answers) == seed_answers + total
    assert set(schedule.http) == {_label(s) for s in HTTP_FAULTS}, schedule.http
    assert set(schedule.commands) == {_label(s) for s in COMMAND_FAULTS}, schedule.commands
    stats = portal.stats()
    # Every 503 the portal sent was an injected one: the client's pacing never overran the bucket.
    assert stats["by_status"].get("503", 0) == schedule.http["QUERY_LIMIT_EXCEEDED"]
    return {"tasks": sum(tries.values()), "tries": tries, "http": schedule.http, "commands": schedule.commands}


def test_each_of_300_messages_is_saved_once_when_one_request_in_ten_fails(portal, monkeypatch, leak_scan):
    # One client retry per call: some tasks need Airflow's retries too.
    report = _soak(
        portal,
        monkeypatch,
        leak_scan,
        total=300,
        sizes=(1, 2, 3, 5, 8),
        seed=11,
        rate_limited=False,
        client_retries=1,
    )
    assert sum(n for tries, n in report["tries"].items() if tries > 1) >= 1, "no task needed an Airflow retry"
    print(f"\n300 saves: {report}")


@pytest.mark.slow
def test_each_of_2000_messages_is_saved_once_when_one_request_in_ten_fails_on_the_standard_plan(
    portal, monkeypatch, leak_scan
):
    # Two client retries per call: with one, a 50-command batch at a 10 % command fault rate fails a try 40 % of
    # the time, more than a task's retries are meant to absorb.
    report = _soak(
        portal,
        monkeypatch,
        leak_scan,
        total=2000,
        sizes=(1, 2, 3, 5, 8, 13, 21, 50),
        seed=2000,
        rate_limited=True,
        client_retries=2,
    )
    print(f"\n2000 saves: {report}")
