"""Bitrix24Notifier: templating, formatting, cutting, failures that never fail a task, and no secret in sight."""

from __future__ import annotations

import asyncio
import importlib.metadata
import socket
from typing import Any

import pytest

from airflow_provider_bitrix24.notifications import Bitrix24Notifier, send_bitrix24_notification
from airflow_provider_bitrix24.notifications.bitrix24 import MAX_MESSAGE, cut, default_text, describe_event
from airflow_provider_bitrix24.sandbox.state import SEED
from tests.helpers import set_conn

GROUP = f"chat{SEED.group_chat_id}"
RUN_ID = "manual__2026-03-11T09:00:00+00:00"
LOG_URL = "http://airflow.example/dags/alerts/runs/manual__2026-03-11T09%3A00%3A00%2B00%3A00/tasks/flaky?try_number=2"
VERSION = tuple(int(x) for x in importlib.metadata.version("apache-airflow").split(".")[:2])
AIRFLOW_3 = VERSION >= (3, 0)
AIRFLOW_3_1 = VERSION >= (3, 1)
#: How the DAG run's page is addressed: Airflow 3's UI, or Airflow 2's grid view.
RUN_PAGE = (
    "/dags/alerts/runs/manual__2026-03-11T09%3A00%3A00%2B00%3A00"
    if AIRFLOW_3
    else "/dags/alerts/grid?dag_run_id=manual__2026-03-11T09%3A00%3A00%2B00%3A00"
)
#: Values that must never reach a message or a log: the sandbox's webhook code and a value Airflow masks.
WEBHOOK_CODE = "sandbox-webhook-0000"
MASKED = "variable-secret-4242"


class FakeTI:
    def __init__(self, state: str = "failed", try_number: int = 2, task_id: str = "flaky") -> None:
        self.dag_id = "alerts"
        self.task_id = task_id
        self.run_id = RUN_ID
        self.state = state
        self.try_number = try_number
        self.log_url = LOG_URL


def task_context(**extra: Any) -> dict[str, Any]:
    ti = FakeTI(**{k: extra.pop(k) for k in ("state", "try_number", "task_id") if k in extra})
    return {"ti": ti, "task_instance": ti, "run_id": RUN_ID, **extra}


def last_message(sandbox, chat_id: int = SEED.group_chat_id) -> dict[str, Any]:
    return sandbox.chat_messages(chat_id)[-1]


def count(sandbox, chat_id: int = SEED.group_chat_id) -> int:
    return len(sandbox.chat_messages(chat_id))


def notifier_lines(caplog, capsys) -> list[str]:
    """The notifier's lines about sending, once each: log records (Airflow 2), else structlog's stdout (Airflow 3)."""
    records = [r.getMessage() for r in caplog.records if "notification to" in r.getMessage()]
    if records:
        return records
    return [line for line in capsys.readouterr().out.splitlines() if "notification to" in line]


@pytest.fixture
def masked():
    from airflow_provider_bitrix24.hooks.bitrix24 import _mask

    _mask(MASKED)
    return MASKED


@pytest.fixture
def dead_portal(monkeypatch) -> str:
    """``bitrix24_default`` pointing at a loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    set_conn(
        monkeypatch,
        "bitrix24_default",
        {"conn_type": "bitrix24", "host": f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"},
    )
    return "bitrix24_default"


# -- templating, formatting, cutting (no portal)


def test_alias_is_the_notifier():
    assert send_bitrix24_notification is Bitrix24Notifier


@pytest.mark.parametrize("dialog_id", ["chat", "chat0", "room5", "-3", "12a", "", True])
def test_a_literal_dialog_id_that_cannot_be_one_fails_at_dag_parse_naming_the_field(dialog_id):
    with pytest.raises(ValueError, match="dialog_id"):
        Bitrix24Notifier(dialog_id=dialog_id)


@pytest.mark.parametrize("dialog_id", ["chat1900", "sg12", "7", 7, "{{ params.chat }}"])
def test_accepted_dialog_ids(dialog_id):
    assert Bitrix24Notifier(dialog_id=dialog_id).dialog_id == str(dialog_id)


def test_default_text_says_what_happened_where_with_the_error_and_bb_codes():
    event = describe_event(task_context(state="up_for_retry", exception=ValueError("boom [URL=http://evil]x[/URL]")))
    text = default_text(event)
    assert text.splitlines()[0] == "[B]Airflow: Task failed, will retry[/B]"
    assert "DAG [B]alerts[/B], task [B]flaky[/B]" in text
    assert f"run {RUN_ID}" in text
    assert "try 2" in text
    # The task's error cannot open BB codes of its own.
    assert "Error: ValueError: boom" in text
    assert "[URL=http://evil]" not in text


def test_message_ends_with_links_to_the_log_and_the_dag_run():
    params = Bitrix24Notifier(dialog_id=GROUP).build_params(task_context())
    assert params["DIALOG_ID"] == GROUP
    tail = params["MESSAGE"].splitlines()[-1]
    assert f"[URL={LOG_URL}]Task log[/URL]" in tail
    assert f"{RUN_PAGE}]DAG run[/URL]" in tail
    assert params["URL_PREVIEW"] == "N"
    assert params["SYSTEM"] == "N"
    assert "[URL=" not in Bitrix24Notifier(dialog_id=GROUP, links=False).build_params(task_context())["MESSAGE"]


def test_deadline_context_names_the_run_and_links_to_it():
    context = {
        "dag_run": {"dag_id": "alerts", "dag_run_id": RUN_ID, "state": "running"},
        "deadline": {"id": "0199", "deadline_time": "2026-03-11T09:05:00+00:00"},
    }
    message = Bitrix24Notifier(dialog_id=GROUP).build_params(context)["MESSAGE"]
    assert message.startswith("[B]Airflow: Deadline missed[/B]")
    assert "deadline 2026-03-11T09:05:00+00:00" in message
    assert "Task log" not in message
    assert "]DAG run[/URL]" in message


def test_templates_render_from_the_context_on_every_call():
    notifier = Bitrix24Notifier(
        dialog_id="{{ params.chat }}", text="{{ ti.task_id }} failed on try {{ ti.try_number }}"
    )
    sent: list[dict[str, Any]] = []
    notifier.notify = lambda context: sent.append(notifier.build_params(context))  # type: ignore[method-assign]
    notifier(task_context(params={"chat": "chat1900"}, try_number=1, task_id="first"))
    notifier(task_context(params={"chat": "42"}, try_number=3, task_id="second"))
    assert [s["DIALOG_ID"] for s in sent] == ["chat1900", "42"]
    assert [s["MESSAGE"].splitlines()[0] for s in sent] == ["first failed on try 1", "second failed on try 3"]


def test_long_text_is_cut_to_what_the_portal_keeps_with_the_links_intact():
    notifier = Bitrix24Notifier(dialog_id=GROUP, text="[B]" + "x" * 30_000 + "[/B]")
    message = notifier.build_params(task_context())["MESSAGE"]
    assert len(message) <= MAX_MESSAGE
    body, tail = message.rsplit("\n", 1)
    assert body.endswith(" (...)")
    assert tail.startswith(f"[URL={LOG_URL}]")


def test_cut_never_leaves_half_a_bb_tag():
    assert cut("abc [URL=http://x]link[/URL]", 12) == "abc (...)"
    assert cut("short", 10) == "short"
    assert len(cut("y" * 50, 20)) == 20


# -- sending through the sandbox


def test_notify_posts_into_the_chat(sandbox, webhook_conn):
    notifier = Bitrix24Notifier(dialog_id=GROUP, text="[B]{{ ti.task_id }}[/B] failed")
    notifier(task_context())
    message = last_message(sandbox)
    assert message["id"] == notifier.message_id
    assert message["author_id"] == SEED.webhook_user_id
    assert message["text"].startswith("[B]flaky[/B] failed\n[URL=")


def test_async_notify_posts_through_the_async_client(sandbox, webhook_conn):
    context = {"dag_run": {"dag_id": "alerts", "dag_run_id": RUN_ID}, "deadline": {"deadline_time": "soon"}}
    notifier = Bitrix24Notifier(dialog_id=GROUP, text="late")
    asyncio.run(notifier.async_notify(context))
    assert last_message(sandbox)["id"] == notifier.message_id
    assert last_message(sandbox)["text"].startswith("late\n")


@pytest.mark.skipif(not AIRFLOW_3_1, reason="notifiers are awaitable with a context from Airflow 3.1 on")
def test_awaiting_the_notifier_renders_and_posts_as_a_deadline_alert_does(sandbox, webhook_conn):
    context = {"dag_run": {"dag_id": "alerts", "dag_run_id": RUN_ID}, "deadline": {"deadline_time": "soon"}}

    async def deadline_alert() -> None:
        # What Airflow's CallbackTrigger does with AsyncCallback(Bitrix24Notifier, kwargs=...): construct, await.
        await Bitrix24Notifier(dialog_id=GROUP, text="{{ dag_run.dag_id }} is late", context=context)

    before = count(sandbox)
    asyncio.run(deadline_alert())
    assert count(sandbox) == before + 1
    assert last_message(sandbox)["text"].startswith("alerts is late\n")


@pytest.mark.parametrize(
    ("conn", "dialog_id", "expected"),
    [
        ("limited", GROUP, "insufficient_scope: "),
        ("webhook", "chat99999", "CHAT_ID: "),
        ("webhook", f"chat{SEED.restricted_chat_id}", "ACCESS_ERROR: "),
    ],
)
def test_a_refused_notification_is_one_log_line_and_no_exception(
    sandbox, monkeypatch, caplog, capsys, conn, dialog_id, expected
):
    set_conn(monkeypatch, "bitrix24_default", sandbox.airflow_conn_json(conn))
    notifier = Bitrix24Notifier(dialog_id=dialog_id)
    notifier(task_context())  # does not raise
    assert notifier.message_id is None
    lines = notifier_lines(caplog, capsys)
    assert len(lines) == 1, lines
    assert "not sent" in lines[0]
    assert expected in lines[0]
    if conn == "limited":
        assert "add the 'im' scope" in lines[0]


def test_a_template_that_cannot_render_is_one_log_line_and_no_request(sandbox, webhook_conn, caplog, capsys):
    notifier = Bitrix24Notifier(dialog_id=GROUP, text="{{ nothing.here }}")
    notifier(task_context())  # does not raise
    (line,) = notifier_lines(caplog, capsys)
    assert "not sent: ValueError: text, dialog_id or bitrix24_conn_id: the template could not be rendered" in line
    assert sandbox.stats()["requests"] == 0


def test_a_dead_portal_costs_seconds_and_raises_nothing(dead_portal, caplog, capsys):
    import time

    notifier = Bitrix24Notifier(dialog_id=GROUP)
    started = time.monotonic()
    notifier(task_context())
    assert time.monotonic() - started < 10
    (line,) = notifier_lines(caplog, capsys)
    assert "not sent: CONNECTION_FAILED" in line


def test_a_dead_portal_in_the_async_path_raises_nothing(dead_portal, logs):
    notifier = Bitrix24Notifier(dialog_id=GROUP)
    asyncio.run(notifier.async_notify(task_context()))
    assert "not sent: CONNECTION_FAILED" in logs()


def test_the_notifier_obeys_the_connections_rate_limit(sandbox, monkeypatch):
    import json

    sandbox.configure(rate_limit_enabled=True, burst=2, per_second=4.0)
    conn = json.loads(sandbox.airflow_conn_json("webhook"))
    conn["extra"] = {"rate_limit": {"burst": 2, "per_second": 4}}
    set_conn(monkeypatch, "bitrix24_default", conn)
    notifier = Bitrix24Notifier(dialog_id=GROUP, text="burst")
    for _ in range(6):
        notifier(task_context())
    stats = sandbox.stats()
    assert stats["by_method"]["im.message.add"] == 6
    assert "QUERY_LIMIT_EXCEEDED" not in stats["errors"]
    assert count(sandbox) >= 6


# -- leak scan


def test_no_secret_reaches_the_message_or_the_log(sandbox, webhook_conn, masked, logs):
    secrets = (WEBHOOK_CODE, masked)
    context = task_context(
        params={"token": masked},
        exception=RuntimeError(f"request to /rest/1/{WEBHOOK_CODE}/x failed, token {masked}"),
    )
    # A text that names both secrets, the default text with an error naming them, and a dialog id that does.
    Bitrix24Notifier(dialog_id=GROUP, text=f"token={{{{ params.token }}}} code={WEBHOOK_CODE}")(dict(context))
    Bitrix24Notifier(dialog_id=GROUP)(dict(context))
    Bitrix24Notifier(dialog_id="{{ params.token }}")(dict(context))
    messages = [m["text"] for m in sandbox.chat_messages(SEED.group_chat_id)[-2:]]
    assert "token=*** code=***" in messages[0]
    assert "***" in messages[1]
    output = logs()
    assert "not sent" in output  # the third one: its dialog id is the secret
    for secret in secrets:
        assert not any(secret in text for text in messages), secret
        assert secret not in output, secret


def test_no_secret_in_the_log_when_the_portal_is_down(dead_portal, masked, logs):
    Bitrix24Notifier(dialog_id=GROUP, text=f"{masked} {WEBHOOK_CODE}")(task_context(exception=ValueError(masked)))
    output = logs()
    assert "not sent" in output
    assert masked not in output
    assert WEBHOOK_CODE not in output


def test_a_templated_connection_id_is_used_as_rendered_on_each_call(sandbox, monkeypatch):
    set_conn(monkeypatch, "b24_live", sandbox.airflow_conn_json("webhook"))
    set_conn(monkeypatch, "b24_limited", sandbox.airflow_conn_json("limited"))
    notifier = Bitrix24Notifier(dialog_id=GROUP, text="hi", bitrix24_conn_id="{{ params.conn }}")
    notifier(task_context(params={"conn": "b24_live"}))
    assert notifier.message_id is not None
    notifier(task_context(params={"conn": "b24_limited"}))
    assert notifier.message_id is None  # the limited webhook has no im scope
