"""
Eight threads whose calls all meet ``expired_token`` at once refresh the token once, and all succeed; a process
started afterwards finds the rotated pair and uses it.

To make sure every one of the eight requests carries the expired token, the portal holds its answers to the
first eight ``profile`` calls for half a second (a ``slow`` fault answers after running the call): all eight are
in flight with the old token before the first ``expired_token`` comes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from typing import Any

from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook, VariableTokenStore
from tests.helpers import ROOT, set_conn
from tests.reliability.canary import ACCESS, CLIENT_SECRET, REFRESH

THREADS = 8

_SECOND_PROCESS = """
import json, sys
from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook
hook = Bitrix24Hook(bitrix24_conn_id=sys.argv[1])
profile = hook.call("profile")
print(json.dumps({"user": profile["ID"], "refreshes": hook.client.engine.oauth.refresh_count}))
"""


def test_one_refresh_serves_eight_threads_and_the_next_process_when_all_meet_expired_token(
    portal, monkeypatch, leak_scan, airflow_db
):
    conn_id = f"rel_oauth_{uuid.uuid4().hex[:8]}"
    set_conn(
        monkeypatch,
        conn_id,
        {
            "conn_type": "bitrix24",
            "host": portal.base_url,
            "extra": {
                "auth_type": "oauth",
                "client_id": portal.oauth_client_id,
                "client_secret": CLIENT_SECRET,
                "refresh_token": REFRESH,
                "access_token": ACCESS,
                "oauth_url": portal.oauth_url,
            },
        },
    )
    portal.expire_access_tokens()
    portal.inject_fault("profile", "slow", count=THREADS, delay=0.5)
    barrier = threading.Barrier(THREADS)
    results: dict[int, Any] = {}

    def call(number: int) -> None:
        hook = Bitrix24Hook(bitrix24_conn_id=conn_id)
        hook.client  # noqa: B018 - built before the barrier, so that the requests leave together
        barrier.wait()
        try:
            results[number] = hook.call("profile")
        except Exception as exc:
            leak_scan.exception(f"oauth thread {number}", exc)
            results[number] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    store = Bitrix24Hook(bitrix24_conn_id=conn_id).client.engine.token_store
    assert isinstance(store, VariableTokenStore)
    stored = store.load()
    assert stored is not None
    leak_scan.secret(stored.access_token)
    leak_scan.secret(stored.refresh_token)
    leak_scan.add("oauth thread results", results)
    assert all(isinstance(r, dict) and r["ID"] == "1" for r in results.values()), results
    assert len(results) == THREADS
    stats = portal.stats()
    assert stats["oauth_requests"] == 1
    # Every thread sent the expired token, unless (on a slow machine) it started after the new pair was stored.
    expired = stats["errors"].get("expired_token", 0)
    assert 1 <= expired <= THREADS, stats
    assert set(stats["errors"]) == {"expired_token"}
    assert stats["by_status"] == {"401": expired, "200": THREADS}
    assert stored.refresh_token != REFRESH
    assert stored.access_token != ACCESS

    # A new process: no shared memory; the connection still holds the expired token and the used-up refresh token.
    done = subprocess.run(
        [sys.executable, "-c", _SECOND_PROCESS, conn_id],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        cwd=ROOT,
    )
    leak_scan.add("second process stdout", done.stdout)
    leak_scan.add("second process stderr", done.stderr)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"user": "1", "refreshes": 0}
    stats = portal.stats()
    assert stats["oauth_requests"] == 1  # no second refresh: the stored access token was used as is
    assert stats["by_status"] == {"401": expired, "200": THREADS + 1}
