"""
Evil text patterns against crafted customer messages never stall the triggerer's event loop.

Real ``SessionHistoryTrigger``s run on one event loop against the sandbox portal: one waits with a pattern that
makes a backtracking engine take exponential time (``(a+)+$``, ``^(\\w+\\s?)+\\?$``) on a session full of crafted
customer messages; an unrelated one waits for an operator's message that appears a second later. A heartbeat
coroutine measures the longest stall of the loop.

Run as a script to measure one scenario::

    .venv/bin/python -m tests.triggers.test_redos_loop --pattern '(a+)+$' --length 30 --messages 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import pytest

EVIL_SESSION = 335  # chat 1763
OTHER_SESSION = 343  # another chat of the same portal
WARM_UP_SESSION = 321  # holds a system message already
CLIENT = 101
OPERATOR = 2
EVIL_PATTERNS = [r"(a+)+$", r"^(\w+\s?)+\?$"]
HEARTBEAT = 0.005


def crafted(length: int) -> str:
    """A customer message that makes a backtracking engine try every split of its ``a`` run: no match at the end."""
    return "a" * (length - 1) + "!"


@dataclass
class Outcome:
    """What one scenario measured."""

    longest_stall: float  # longest gap between two heartbeats, in seconds
    latency: float | None  # from the unrelated message appearing to its trigger's event
    other_event: dict[str, Any] | None
    evil_polls: int
    evil_searches: int | None  # pattern searches of the evil wait (None when the code has no incremental matcher)


async def run_scenario(
    sandbox: Any,
    conn_id: str,
    *,
    pattern: str,
    texts: list[str],
    appear_after: float = 1.0,
    duration: float = 3.0,
    poll_interval: float = 0.2,
) -> Outcome:
    """
    The evil wait polls ``texts`` (already in its session) while the unrelated wait waits for a message that
    appears ``appear_after`` seconds in; both run until ``duration`` seconds have passed and the unrelated wait
    has ended (at most 10 minutes).
    """
    from airflow.triggers.base import TriggerEvent

    from airflow_provider_bitrix24.triggers import _poller
    from airflow_provider_bitrix24.triggers.session_history import SessionHistoryTrigger

    evil_after = sandbox.add_message(EVIL_SESSION, CLIENT, "hello")
    for text in texts:
        sandbox.add_message(EVIL_SESSION, CLIENT, text)
    other_after = sandbox.add_message(OTHER_SESSION, CLIENT, "anyone there?")
    evil = SessionHistoryTrigger(
        bitrix24_conn_id=conn_id,
        session_id=EVIL_SESSION,
        after_message_id=evil_after,
        authors=["client"],
        text_pattern=pattern,
        poll_interval=poll_interval,
    )
    other = SessionHistoryTrigger(
        bitrix24_conn_id=conn_id,
        session_id=OTHER_SESSION,
        after_message_id=other_after,
        authors=["operator"],
        poll_interval=poll_interval,
    )

    longest = 0.0
    beating = True

    async def heartbeat() -> None:
        nonlocal longest
        last = time.perf_counter()
        while beating:
            await asyncio.sleep(HEARTBEAT)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    async def first_event(trigger: SessionHistoryTrigger) -> tuple[dict[str, Any], float]:
        event = await trigger.run().asend(None)
        assert isinstance(event, TriggerEvent)
        return event.payload, time.perf_counter()

    # Warm up first: imports and the connection lookup of a first wait are not what is measured here.
    warm_up = SessionHistoryTrigger(
        bitrix24_conn_id=conn_id, session_id=WARM_UP_SESSION, authors=["system"], poll_interval=poll_interval
    )
    assert (await first_event(warm_up))[0]["status"] == "success"

    appeared: list[float] = []

    def appear() -> None:
        sandbox.add_message(OTHER_SESSION, OPERATOR, "Here is your answer")
        appeared.append(time.perf_counter())

    started = time.perf_counter()
    beat = asyncio.create_task(heartbeat())
    evil_task = asyncio.create_task(first_event(evil))
    other_task = asyncio.create_task(first_event(other))
    timer = threading.Timer(appear_after, appear)
    timer.start()
    try:
        done, _ = await asyncio.wait({other_task}, timeout=600)
        remaining = duration - (time.perf_counter() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        evil_polls, evil_searches = 0, None
        for poller in list(_poller._pollers.values()):
            for subscription in list(poller._subscriptions):
                if subscription.target == ("SESSION_ID", EVIL_SESSION):
                    evil_polls = subscription.polls
                    matcher = getattr(subscription, "matcher", None)
                    evil_searches = matcher.searches if matcher is not None else None
        assert not evil_task.done(), evil_task.result()  # the crafted messages never match: it still waits
    finally:
        timer.cancel()
        for task in (evil_task, other_task):
            if not task.done():
                task.cancel()
        await asyncio.gather(evil_task, other_task, return_exceptions=True)
        beating = False
        await beat
    other_event, latency = None, None
    if other_task in done and not other_task.cancelled() and other_task.exception() is None:
        other_event, fired = other_task.result()
        latency = fired - appeared[0] if appeared else None
    return Outcome(longest, latency, other_event, evil_polls, evil_searches)


@pytest.mark.parametrize("pattern", EVIL_PATTERNS)
def test_unrelated_wait_fires_in_seconds_while_an_evil_pattern_polls(sandbox, webhook_conn, pattern):
    # 200 crafted 30-character messages (minutes each for a backtracking engine) and 20 of 20,000 characters.
    texts = [crafted(30)] * 200 + [crafted(20_000)] * 20
    outcome = asyncio.run(
        asyncio.wait_for(run_scenario(sandbox, webhook_conn, pattern=pattern, texts=texts, duration=3.0), 60)
    )
    print(f"\n{pattern}: {outcome}")
    assert outcome.other_event is not None
    assert outcome.other_event["status"] == "success", outcome.other_event
    assert [m["text"] for m in outcome.other_event["messages"]] == ["Here is your answer"]
    # A backtracking search of one crafted message on the loop holds it for minutes; a busy machine's scheduling
    # shows as stalls of tens of milliseconds and a latency of about a poll interval. 5 s separates the two.
    assert outcome.latency is not None
    assert outcome.latency < 5.0, outcome
    assert outcome.longest_stall < 5.0, outcome
    # The evil wait kept polling, and searched each crafted message once, however many polls it made.
    assert outcome.evil_polls >= 3, outcome
    assert outcome.evil_searches == len(texts), outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pattern", default=EVIL_PATTERNS[0])
    parser.add_argument("--length", type=int, default=24, help="characters of each crafted message")
    parser.add_argument("--messages", type=int, default=1, help="crafted messages in the evil wait's session")
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"

    from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal

    with (
        tempfile.TemporaryDirectory(prefix="bitrix24-redos-") as home,
        SandboxPortal(SandboxConfig.preset("unlimited")) as portal,
    ):
        os.environ.setdefault("AIRFLOW_HOME", home)
        os.environ["AIRFLOW_CONN_BITRIX24_REDOS"] = portal.airflow_conn_json("webhook")
        texts = [crafted(args.length)] * args.messages
        outcome = asyncio.run(
            run_scenario(portal, "bitrix24_redos", pattern=args.pattern, texts=texts, duration=args.duration)
        )
    print(json.dumps({"pattern": args.pattern, "length": args.length, "messages": args.messages, **asdict(outcome)}))


if __name__ == "__main__":
    main()
