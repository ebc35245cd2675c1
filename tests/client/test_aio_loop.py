"""The async client never holds the event loop: large answers are decoded in a worker thread."""

from __future__ import annotations

import asyncio
import json
import threading

from airflow_provider_bitrix24.client import AsyncBitrix24Client, aio, parse_connection
from tests.replay import ReplayServer


def test_a_large_answer_is_decoded_off_the_event_loop(monkeypatch):
    rows = [{"ID": str(i), "TITLE": "x" * 200, "NESTED": {"A": [1, 2, 3]}} for i in range(40_000)]
    body = json.dumps({"result": rows, "time": {}}).encode()
    assert len(body) > aio.DECODE_OFF_LOOP
    decoded_on: list[str] = []
    real_decode = aio.decode_json

    def spy(raw: bytes):
        decoded_on.append(threading.current_thread().name)
        return real_decode(raw)

    monkeypatch.setattr(aio, "decode_json", spy)

    async def main(server: ReplayServer) -> list:
        async with AsyncBitrix24Client(parse_connection(host=server.webhook_url)) as client:
            return await client.call("crm.deal.list")

    with ReplayServer() as server:
        server.queue(200, body)
        result = asyncio.run(main(server))
    assert len(result) == len(rows)
    assert decoded_on
    assert decoded_on[0] != threading.main_thread().name
