"""
Fixtures of the reliability suite: one sandbox portal with canary secrets, and a scan for those secrets.

Every secret of the portal used here (webhook codes, the OAuth client secret, the initial tokens, and every token
rotated during the run) is a distinctive canary (:mod:`tests.reliability.canary`). Each test's captured log
output, the values its tasks return, the texts of the exceptions it provokes (message, repr and full traceback),
the reports of failing tests and the output of any process it starts are collected; when the session ends, the
collected text must not contain a single canary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
from airflow_provider_bitrix24.sandbox.config import FULL_SCOPES, WebhookSpec
from tests.reliability.canary import ACCESS, CLIENT_SECRET, CODE, LIMITED_CODE, REFRESH, SCAN, LeakScan

#: Loggers that may see URLs or request bodies; the suite runs them at DEBUG so that a leak would show.
_CHATTY = ("urllib3", "requests", "httpx", "httpcore", "airflow_provider_bitrix24", "airflow.task")


@pytest.fixture(scope="session")
def leak_scan() -> Iterator[LeakScan]:
    """The session's scan; asserts at the end of the session that no canary leaked."""
    yield SCAN
    leaks = SCAN.leaks()
    assert SCAN.texts, "the reliability suite collected nothing to scan"
    assert not leaks, f"secrets found in: {sorted({origin for origin, _ in leaks})}"


@pytest.fixture(autouse=True)
def _collect_output(
    request: pytest.FixtureRequest, leak_scan: LeakScan, caplog: pytest.LogCaptureFixture, capsys: Any
) -> Iterator[None]:
    """
    Every test of the suite: its log records (with their tracebacks) and its stdout/stderr (where Airflow 3
    writes task logs) go into the scan.
    """
    caplog.set_level(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in _CHATTY}
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield
    finally:
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        records = [r for when in ("setup", "call") for r in caplog.get_records(when)]
        captured = capsys.readouterr()
        text = "\n".join([*(formatter.format(r) for r in records), captured.out, captured.err])
        leak_scan.add(f"{request.node.nodeid}: output", text)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """A failing test's report (its traceback) is output too."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        SCAN.add(f"{item.nodeid}: report", report.longreprtext)


@pytest.fixture(scope="session")
def canary_portal() -> Iterator[SandboxPortal]:
    config = SandboxConfig.preset(
        "unlimited",
        webhooks=[WebhookSpec(1, CODE, FULL_SCOPES), WebhookSpec(2, LIMITED_CODE, ("user",))],
        oauth_client_secret=CLIENT_SECRET,
        oauth_access_token=ACCESS,
        oauth_refresh_token=REFRESH,
    )
    with SandboxPortal(config) as portal:
        yield portal


@pytest.fixture
def portal(canary_portal: SandboxPortal) -> Iterator[SandboxPortal]:
    """The canary portal back at its seed data, limits off, and no client state left from other tests."""
    from airflow_provider_bitrix24.client import limits, oauth

    canary_portal.reset()
    limits.forget_limits()
    oauth.forget_oauth_sessions()
    yield canary_portal
    canary_portal.reset()
