"""The hook and client over real HTTP against the sandbox portal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from airflow_provider_bitrix24.client import (
    Bitrix24AuthError,
    Bitrix24Client,
    Bitrix24MethodError,
    Bitrix24OperationTimeLimitError,
    Bitrix24PermissionError,
    Bitrix24RateLimitError,
    Bitrix24RequestError,
    Bitrix24ResponseError,
    Bitrix24ServerError,
    Bitrix24TokenExpiredError,
    RetryPolicy,
    parse_connection,
)
from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook
from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import oauth_connection, set_conn

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05, jitter=0.0, server_cutoff=1.0)

# Every system error code of the reference (§2.2 and the additional table): (code, status, class, retried).
SYSTEM_ERRORS = [
    ("INTERNAL_SERVER_ERROR", 500, Bitrix24ServerError, True),
    ("ERROR_UNEXPECTED_ANSWER", 500, Bitrix24ServerError, True),
    ("QUERY_LIMIT_EXCEEDED", 503, Bitrix24RateLimitError, True),
    ("QUERY_LIMIT_EXCEEDED", 429, Bitrix24RateLimitError, True),
    ("OPERATION_TIME_LIMIT", 429, Bitrix24OperationTimeLimitError, True),
    ("CONNECTION_ERROR", 401, Bitrix24ServerError, True),
    ("ERROR_BATCH_METHOD_NOT_ALLOWED", 405, Bitrix24RequestError, False),
    ("ERROR_BATCH_LENGTH_EXCEEDED", 400, Bitrix24RequestError, False),
    ("NO_AUTH_FOUND", 401, Bitrix24AuthError, False),
    ("INVALID_REQUEST", 400, Bitrix24RequestError, False),
    ("OVERLOAD_LIMIT", 503, Bitrix24ServerError, False),
    ("ACCESS_DENIED", 403, Bitrix24PermissionError, False),
    ("INVALID_CREDENTIALS", 403, Bitrix24AuthError, False),
    ("ERROR_MANIFEST_IS_NOT_AVAILABLE", 404, Bitrix24RequestError, False),
    ("insufficient_scope", 403, Bitrix24PermissionError, False),
    ("expired_token", 401, Bitrix24TokenExpiredError, False),  # a webhook cannot refresh
    ("user_access_error", 403, Bitrix24PermissionError, False),
    ("PORTAL_DELETED", 500, Bitrix24ServerError, False),
    ("METHOD_CONFIRM_WAITING", 401, Bitrix24AuthError, False),
    ("METHOD_CONFIRM_DENIED", 403, Bitrix24PermissionError, False),
    ("ERROR_METHOD_NOT_FOUND", 404, Bitrix24RequestError, False),
    ("WRONG_AUTH_TYPE", 403, Bitrix24PermissionError, False),
    ("invalid_token", 401, Bitrix24AuthError, False),
    ("authorization_error", 401, Bitrix24AuthError, False),
    ("APPLICATION_NOT_FOUND", 401, Bitrix24AuthError, False),
    ("ERROR_CORE", 400, Bitrix24RequestError, False),
    ("ERROR_ARGUMENT", 400, Bitrix24RequestError, False),
    ("ERROR_NOT_FOUND", 400, Bitrix24RequestError, False),
    ("WRONG_ENCODING", 400, Bitrix24RequestError, False),
    ("SOME_METHOD_ERROR", 400, Bitrix24MethodError, False),
]


@pytest.fixture
def hook(webhook_conn):
    return Bitrix24Hook(bitrix24_conn_id=webhook_conn, retry_policy=FAST)


def test_call_returns_the_result(sandbox, hook):
    profile = hook.call("profile")
    assert str(profile["ID"]) == str(SEED.webhook_user_id)
    assert sandbox.stats()["requests"] == 1


@pytest.mark.parametrize(
    ("code", "status", "cls", "retried"), SYSTEM_ERRORS, ids=[f"{e[0]}-{e[1]}" for e in SYSTEM_ERRORS]
)
def test_system_error_maps_to_class_and_retry_decision(sandbox, hook, code, status, cls, retried):
    sandbox.inject_fault("profile", "error", count=1, error=code, status=status)
    if retried:
        assert str(hook.call("profile")["ID"]) == str(SEED.webhook_user_id)
        assert sandbox.stats()["requests"] == 2
    else:
        with pytest.raises(cls) as info:
            hook.call("profile")
        assert info.value.code == code
        assert info.value.status == status
        assert str(info.value).startswith(f"{code}: ")
        assert not info.value.retryable
        assert sandbox.stats()["requests"] == 1  # a permanent error costs exactly one request


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"kind": "raw", "status": 502, "body": "<html><h1>502 Bad Gateway</h1></html>"}, "INVALID_RESPONSE"),
        ({"kind": "raw", "status": 503, "body": ""}, "EMPTY_RESPONSE"),
        ({"kind": "raw", "status": 504, "body": "gateway timeout"}, "INVALID_RESPONSE"),
        ({"kind": "drop_before"}, "CONNECTION_FAILED"),
        ({"kind": "drop_after"}, "CONNECTION_FAILED"),
    ],
)
def test_transport_failures_are_retried(sandbox, hook, logs, fault, code):
    sandbox.inject_fault("profile", count=1, **fault)
    assert str(hook.call("profile")["ID"]) == str(SEED.webhook_user_id)
    assert sandbox.stats()["requests"] == 2
    assert f"failed with {code}" in logs()


def test_timeout_is_retried(sandbox, monkeypatch):
    set_conn(monkeypatch, "b24_fast", {"conn_type": "bitrix24", "host": sandbox.webhook_url, "extra": {"timeout": 0.5}})
    sandbox.inject_fault("profile", "hang", count=1, delay=3)
    hook = Bitrix24Hook(bitrix24_conn_id="b24_fast", retry_policy=FAST)
    assert str(hook.call("profile")["ID"]) == str(SEED.webhook_user_id)


def test_transient_errors_give_up_after_the_retry_budget(sandbox, hook):
    sandbox.inject_fault("profile", "error", count=10, error="INTERNAL_SERVER_ERROR", status=500)
    with pytest.raises(Bitrix24ServerError) as info:
        hook.call("profile")
    assert info.value.retryable
    assert sandbox.stats()["requests"] == FAST.max_retries + 1


def test_truncated_200_is_retried_then_a_clear_error(sandbox, hook):
    truncated = {"status": 200, "body": '{"result": [1, 2', "content_type": "application/json"}
    sandbox.inject_fault("profile", "raw", count=1, **truncated)
    assert str(hook.call("profile")["ID"]) == str(SEED.webhook_user_id)  # a cut answer is retried
    sandbox.inject_fault("profile", "raw", count=10, **truncated)
    with pytest.raises(Bitrix24ResponseError, match=r"^INVALID_RESPONSE: the answer is not JSON .*HTTP 200"):
        hook.call("profile")


def test_oversized_body_is_refused(sandbox):
    config = parse_connection(host=sandbox.webhook_url)
    object.__setattr__(config, "max_body_bytes", 100_000)
    sandbox.inject_fault("profile", "raw", count=1, status=200, size=5_000_000, content_type="application/json")
    with Bitrix24Client(config, retry_policy=FAST) as client, pytest.raises(Bitrix24ResponseError) as info:
        client.call("profile")
    assert info.value.code == "RESPONSE_TOO_LARGE"


def test_operation_time_limit_waits_for_the_reset(sandbox, hook):
    sandbox.configure(operating_limit=1.0, operating_cost={"profile": 2.0}, operating_window=1.5, operating_bucket=0.5)
    waits: list[float] = []
    config = parse_connection(host=sandbox.webhook_url)
    policy = RetryPolicy(max_retries=3, max_total_wait=10)

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        import time

        time.sleep(seconds)

    with Bitrix24Client(config, retry_policy=policy, sleep=sleep) as client:
        client.call("profile")  # accumulates 2 s > 1 s: the next call is blocked until the bucket expires
        client.call("profile")
    assert sandbox.stats()["errors"].get("OPERATION_TIME_LIMIT", 0) <= 1
    assert waits, "the client should have waited for the operating-time reset"


def test_operation_time_limit_beyond_budget_says_when_it_unblocks(sandbox):
    sandbox.configure(operating_limit=1.0, operating_cost={"profile": 5.0})
    config = parse_connection(host=sandbox.webhook_url)
    with Bitrix24Client(config, retry_policy=RetryPolicy(max_total_wait=1.0)) as client:
        client.call("profile")
        with pytest.raises(Bitrix24OperationTimeLimitError, match="unblocks at") as info:
            client.call("profile")
    assert info.value.retryable
    assert info.value.unblocks_at is not None


def test_batch_returns_every_command_and_chunks_by_50(sandbox, hook):
    ids = list(range(SEED.bulk_message_ids[0], SEED.bulk_message_ids[0] + 120))
    commands = [("imopenlines.message.quick.save", {"CHAT_ID": SEED.bulk_chat_id, "MESSAGE_ID": m}) for m in ids]
    commands.insert(7, ("imopenlines.message.quick.save", {"CHAT_ID": SEED.bulk_chat_id, "MESSAGE_ID": 999999999}))
    items = hook.call_batch(commands)
    assert len(items) == 121
    assert [i.ok for i in items].count(False) == 1
    assert items[7].error is not None
    assert items[7].error.code == "CANT_SAVE_QUICK_ANSWER"
    assert all(i.result is True for i in items if i.ok)
    assert sandbox.stats()["by_method"].get("batch") == 3


def test_batch_falls_back_to_single_calls_for_methods_not_allowed_in_batch(sandbox, hook):
    items = hook.call_batch([("profile", None), ("batch", {"cmd": {"a": "profile"}})])
    assert items[0].ok
    # ``batch`` inside ``batch`` is refused by the portal, then sent alone; it succeeds as a single call.
    assert items[1].ok, items[1].error
    assert sandbox.stats()["by_method"].get("batch") == 2


def test_list_all_follows_next(sandbox, hook):
    everyone = hook.list_all("user.get")  # one page holds them all by default
    assert len(everyone) > 2
    sandbox.reset()
    sandbox.configure(rate_limit_enabled=False, list_page_size=2)
    paged = hook.list_all("user.get")
    assert [u["ID"] for u in paged] == [u["ID"] for u in everyone]
    assert sandbox.stats()["by_method"]["user.get"] == -(-len(everyone) // 2)  # one request per page
    assert [u["ID"] for u in hook.list_all("user.get", limit=3)] == [u["ID"] for u in everyone[:3]]


def test_test_connection_reports_user_and_scopes(hook):
    ok, message = hook.test_connection()
    assert ok, message
    assert "imopenlines" in message
    assert "sandbox-webhook-0000" not in message


def test_test_connection_says_when_imopenlines_is_missing(sandbox, monkeypatch):
    set_conn(monkeypatch, "b24_limited", sandbox.airflow_conn_json("limited"))
    ok, message = Bitrix24Hook(bitrix24_conn_id="b24_limited").test_connection()
    assert not ok
    assert "lacks the 'imopenlines' scope" in message


def test_airflow_connections_test_cli_succeeds(sandbox):
    env = {**os.environ, "AIRFLOW_CONN_BITRIX24_DEFAULT": sandbox.airflow_conn_json("webhook")}
    env["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "test", "bitrix24_default"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Connection success!" in proc.stdout
    assert "sandbox-webhook-0000" not in proc.stdout + proc.stderr


def test_burst_from_one_process_draws_no_query_limit_exceeded(sandbox, webhook_conn):
    """
    Many threads through one portal bucket: the client paces them, the portal never refuses one, even when a thread
    is woken late (at 10 per second the client keeps 4 of the 10 free: 0.5 s of lateness, as the standard plan).
    """
    sandbox.configure(rate_limit_enabled=True, burst=10, per_second=10.0)
    set_conn_json = sandbox.airflow_conn_json("webhook")
    data = json.loads(set_conn_json)
    data["extra"] = {"rate_limit": {"burst": 10, "per_second": 10}}
    os.environ["AIRFLOW_CONN_B24_PACED"] = json.dumps(data)
    try:
        hooks = [Bitrix24Hook(bitrix24_conn_id="b24_paced", retry_policy=RetryPolicy(max_retries=0)) for _ in range(4)]
        errors: list[BaseException] = []

        def work(h: Bitrix24Hook) -> None:
            try:
                for _ in range(15):
                    h.call("server.time")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(h,)) for h in hooks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        stats = sandbox.stats()
        assert stats["requests"] == 60
        assert stats["errors"].get("QUERY_LIMIT_EXCEEDED", 0) == 0
    finally:
        del os.environ["AIRFLOW_CONN_B24_PACED"]


def test_oauth_expired_token_is_refreshed_once_and_rotated(sandbox, monkeypatch, airflow_db):
    tokens = sandbox.issue_oauth_tokens(expired=True)
    set_conn(monkeypatch, "b24_oauth", oauth_connection(sandbox, tokens))
    hook = Bitrix24Hook(bitrix24_conn_id="b24_oauth")
    assert str(hook.call("profile")["ID"])
    session = hook.client.engine.oauth
    assert session is not None
    assert session.refresh_count == 1
    assert session.access_token != tokens["access_token"]
    # The old refresh token was used up by the rotation.
    proc_env_refresh = tokens["refresh_token"]
    assert session.pair.refresh_token != proc_env_refresh
    # A second call reuses the new token without another refresh.
    hook.call("profile")
    assert session.refresh_count == 1


def test_one_info_line_per_call_with_method_duration_operating_and_redacted_url(sandbox, hook, caplog, capsys):
    caplog.set_level("INFO")
    hook.call("profile")
    hook.call("server.time")
    # Airflow 2 logs through the standard logging records; Airflow 3 through structlog, printed to stdout.
    records = [r.getMessage() for r in caplog.records if "-> HTTP" in r.getMessage()]
    printed = [line for line in capsys.readouterr().out.splitlines() if "-> HTTP" in line]
    lines = records or printed
    assert len(lines) == 2, lines
    assert "Bitrix24 profile -> HTTP 200 in " in lines[0]
    assert "(operating " in lines[0]
    assert f"{sandbox.base_url}/rest/1/***/profile" in lines[0]
    assert "Bitrix24 server.time -> HTTP 200" in lines[1]
    assert not any("sandbox-webhook-0000" in line for line in records + printed)


def test_airflow_errors_gives_taskflow_code_the_operators_failures(sandbox, webhook_conn):
    from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

    from airflow_provider_bitrix24.failures import airflow_errors

    hook = Bitrix24Hook(bitrix24_conn_id=webhook_conn, retry_policy=FAST, airflow_errors=True)
    # Transient, beyond the client's retries: Airflow's retries apply.
    sandbox.inject_fault("profile", "error", count=4, error="QUERY_LIMIT_EXCEEDED", status=503)
    with pytest.raises(AirflowException, match=r"^QUERY_LIMIT_EXCEEDED: .*transient") as transient:
        hook.call("profile")
    assert not isinstance(transient.value, AirflowFailException)
    assert isinstance(transient.value.__cause__, Bitrix24RateLimitError)
    # Permanent: fails at once, with the hint.
    with pytest.raises(AirflowFailException, match=r"^CANT_SAVE_QUICK_ANSWER: .*Hint: "):
        hook.call("imopenlines.message.quick.save", {"CHAT_ID": 999_999, "MESSAGE_ID": 1})
    sandbox.inject_fault("batch", "error", count=1, error="NO_AUTH_FOUND")
    with pytest.raises(AirflowFailException, match=r"^NO_AUTH_FOUND: .*Hint: the webhook code"):
        hook.call_batch([("profile", None), ("scope", None)])
    # The same as a context manager, around the plain hook.
    plain = Bitrix24Hook(bitrix24_conn_id=webhook_conn, retry_policy=FAST)
    sandbox.inject_fault("profile", "error", count=1, error="INVALID_CREDENTIALS")
    with pytest.raises(AirflowFailException, match=r"^INVALID_CREDENTIALS: "), airflow_errors():
        plain.call("profile")
