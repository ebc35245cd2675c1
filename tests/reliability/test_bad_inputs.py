"""
Wrong values in every operator and sensor argument and in every connection field.

Each case must fail the task with an error that starts with the name of the field at fault, and must not send a
single request: the portal counts none, and no transport of the client is ever asked to send. Connections point
at the canary portal wherever the field allows it, so a value wrongly accepted would show up as a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_bitrix24.client.aio import AsyncBitrix24Client
from airflow_provider_bitrix24.client.config import field_title
from airflow_provider_bitrix24.client.sync import SyncTransport
from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator
from airflow_provider_bitrix24.sandbox.state import SEED
from airflow_provider_bitrix24.sensors.session_history import SessionHistorySensor
from tests.helpers import set_conn
from tests.reliability.canary import ACCESS, CANARIES, CLIENT_SECRET, CODE, REFRESH, webhook_conn


@dataclass(frozen=True)
class Case:
    """
    One wrong value: the arguments (or connection) that carry it, and the field the error must name.

    The connection stays out of ``repr``: pytest prints a failing test's arguments in its report, and the
    connection holds the portal's canary secrets, which the leak scan would then find in the report.
    """

    name: str
    field: str
    args: dict[str, Any] = field(default_factory=dict)
    conn: dict[str, Any] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.name


OPERATOR_CASES = [
    Case("chat_id zero", "chat_id", {"chat_id": 0}),
    Case("chat_id negative", "chat_id", {"chat_id": -1763}),
    Case("chat_id text", "chat_id", {"chat_id": "chat1763"}),
    Case("chat_id none", "chat_id", {"chat_id": None}),
    Case("chat_id fraction", "chat_id", {"chat_id": 1763.5}),
    Case("chat_id bool", "chat_id", {"chat_id": True}),
    Case("message_id text", "message_id", {"message_id": "hello"}),
    Case("message_id zero", "message_id", {"message_id": 0}),
    Case("message_id set", "message_id", {"message_id": {85805, 85811}}),
    Case("message_id broken list", "message_id", {"message_id": "[85805, 85811"}),
    Case("message_id list item", "message_id[1]", {"message_id": [85805, "x"]}),
    Case("message_id dict without id", "message_id[0]", {"message_id": [{"text": "hi"}]}),
    Case("chat_id arabic-indic digits", "chat_id", {"chat_id": "\u0661\u0667\u0666\u0663"}),
    Case("chat_id fullwidth digits", "chat_id", {"chat_id": "\uff11\uff17\uff16\uff13"}),
    Case("chat_id superscript two", "chat_id", {"chat_id": "\u00b2"}),
    Case("chat_id double minus", "chat_id", {"chat_id": "--5"}),
    Case("chat_id plus minus", "chat_id", {"chat_id": "+-5"}),
    Case("chat_id longer than the portal accepts", "chat_id", {"chat_id": "1" * 19 + "0"}),
    Case("chat_id above 2**63-1", "chat_id", {"chat_id": 2**63}),
    Case("chat_id float beyond 2**53", "chat_id", {"chat_id": 1e17}),
    Case("chat_id infinite", "chat_id", {"chat_id": float("inf")}),
    Case("message_id superscript two", "message_id", {"message_id": "\u00b2"}),
    Case("message_id list item in other digits", "message_id[1]", {"message_id": [85805, "\u0668\u0665"]}),
    Case("message_id list item too long", "message_id[0]", {"message_id": ["9" * 40]}),
    Case("message_id dict id in other digits", "message_id[0]['id']", {"message_id": [{"id": "\uff18"}]}),
    Case("message_id unhashable literal", "message_id", {"message_id": "[{[1]: 2}]"}),
    Case("message_id dict with mixed keys", "message_id[0]", {"message_id": [{1: "a", "text": "b"}]}),
]

SENSOR_CASES = [
    Case("neither session_id nor chat_id", "session_id", {"session_id": None, "chat_id": None}),
    Case("session_id text", "session_id", {"session_id": "abc"}),
    Case("session_id zero", "session_id", {"session_id": 0}),
    Case("chat_id text", "chat_id", {"session_id": None, "chat_id": "chat1763"}),
    Case("after_message_id negative", "after_message_id", {"after_message_id": -5}),
    Case("after_message_id text", "after_message_id", {"after_message_id": "latest"}),
    Case("author unknown", "author", {"author": "robot"}),
    Case("author empty", "author", {"author": []}),
    Case("text_pattern invalid", "text_pattern", {"text_pattern": "(unclosed"}),
    Case("min_messages zero", "min_messages", {"min_messages": 0}),
    Case("min_messages text", "min_messages", {"min_messages": "two"}),
    Case("session_id arabic-indic digits", "session_id", {"session_id": "\u0663\u0663\u0665"}),
    Case("session_id fullwidth digits", "session_id", {"session_id": "\uff13\uff13\uff15"}),
    Case("session_id superscript two", "session_id", {"session_id": "\u00b2"}),
    Case("session_id longer than the portal accepts", "session_id", {"session_id": "9" * 19}),
    Case("chat_id double minus", "chat_id", {"session_id": None, "chat_id": "--1763"}),
    Case("chat_id above 2**63-1", "chat_id", {"session_id": None, "chat_id": 2**64}),
    Case("after_message_id fullwidth digits", "after_message_id", {"after_message_id": "\uff18\uff15"}),
    Case("after_message_id superscript two", "after_message_id", {"after_message_id": "\u00b2"}),
    Case("after_message_id double minus", "after_message_id", {"after_message_id": "--5"}),
    Case("after_message_id plus minus", "after_message_id", {"after_message_id": "+-5"}),
    Case("after_message_id longer than the portal accepts", "after_message_id", {"after_message_id": "1" * 25}),
    Case("min_messages arabic-indic digits", "min_messages", {"min_messages": "\u0662"}),
    Case("min_messages superscript two", "min_messages", {"min_messages": "\u00b2"}),
    Case("min_messages plus minus", "min_messages", {"min_messages": "+-2"}),
    Case("text_pattern backreference", "text_pattern", {"text_pattern": r"(\w+) \1"}),
    Case("text_pattern lookbehind", "text_pattern", {"text_pattern": r"(?<=order )\d+"}),
    Case("text_pattern lookahead", "text_pattern", {"text_pattern": r"refund(?!ed)"}),
    Case("text_pattern too large", "text_pattern", {"text_pattern": r"(.*\p{L}){20}"}),
]


def _oauth(**extra: Any) -> dict[str, Any]:
    values = {
        "auth_type": "oauth",
        "client_id": "app.sandbox.0000",
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH,
        "access_token": ACCESS,
        "oauth_url": "{base}/oauth/token/",
    }
    values.update(extra)
    return {k: v for k, v in values.items() if v is not None}


WEBHOOK = "{base}/rest/1/{code}/"
CONNECTION_CASES = [
    Case("host empty", "host", conn={"host": ""}),
    Case("host ftp", "host", conn={"host": "ftp://{netloc}/rest/1/{code}/"}),
    Case("host plain http off loopback", "host", conn={"host": "http://portal.example.com/rest/1/{code}/"}),
    Case("host with user and password", "host", conn={"host": "http://user:pw@{netloc}/rest/1/{code}/"}),
    Case("host with query string", "host", conn={"host": WEBHOOK + "?debug=1"}),
    Case("host with another path", "host", conn={"host": "{base}/crm/deal/"}),
    Case("webhook user id not a number", "host", conn={"host": "{base}/rest/admin/{code}/"}),
    Case("webhook code with a space", "host", conn={"host": "{base}/rest/1/bad code/"}),
    Case("login not a number", "login", conn={"host": "{base}", "login": "admin", "password": "{code}"}),
    Case("login missing", "login", conn={"host": "{base}", "password": "{code}"}),
    Case("password missing", "password", conn={"host": "{base}", "login": "1"}),
    Case("password with a slash", "password", conn={"host": "{base}", "login": "1", "password": "{code}/x"}),
    Case("webhook url and login", "login/password", conn={"host": WEBHOOK, "login": "1"}),
    Case("port disagrees with host", "port", conn={"host": WEBHOOK, "port": 1}),
    Case("timeout negative", "extra.timeout", conn={"host": WEBHOOK, "extra": {"timeout": -1}}),
    Case("timeout text", "extra.timeout", conn={"host": WEBHOOK, "extra": {"timeout": "soon"}}),
    Case("max_retries negative", "extra.max_retries", conn={"host": WEBHOOK, "extra": {"max_retries": -2}}),
    Case("verify a number", "extra.verify", conn={"host": WEBHOOK, "extra": {"verify": 5}}),
    Case("rate_limit unknown preset", "extra.rate_limit", conn={"host": WEBHOOK, "extra": {"rate_limit": "huge"}}),
    Case(
        "rate_limit burst zero",
        "extra.rate_limit.burst",
        conn={"host": WEBHOOK, "extra": {"rate_limit": {"burst": 0, "per_second": 2}}},
    ),
    Case(
        "rate_limit rate zero",
        "extra.rate_limit.per_second",
        conn={"host": WEBHOOK, "extra": {"rate_limit": {"burst": 5, "per_second": 0}}},
    ),
    Case("rate_limit without rate", "extra.rate_limit", conn={"host": WEBHOOK, "extra": {"rate_limit": {"burst": 5}}}),
    Case("auth_type unknown", "extra.auth_type", conn={"host": WEBHOOK, "extra": {"auth_type": "basic"}}),
    Case(
        "oauth without client_secret",
        "extra.client_secret",
        conn={"host": "{base}", "extra": _oauth(client_secret=None)},
    ),
    Case(
        "oauth without refresh_token",
        "extra.refresh_token",
        conn={"host": "{base}", "extra": _oauth(refresh_token=None)},
    ),
    Case("oauth with a webhook host", "host", conn={"host": WEBHOOK, "extra": _oauth()}),
    Case("oauth with a login", "login/password", conn={"host": "{base}", "login": "1", "extra": _oauth()}),
    Case("oauth expires_at text", "extra.expires_at", conn={"host": "{base}", "extra": _oauth(expires_at="tomorrow")}),
    Case("oauth url ftp", "extra.oauth_url", conn={"host": "{base}", "extra": _oauth(oauth_url="ftp://{netloc}/")}),
]


@pytest.fixture
def no_requests(portal, monkeypatch):
    """Fails the test if any client transport is asked to send; checks the portal counted nothing too."""
    sent: list[str] = []

    def refuse_sync(self: Any, request: Any) -> Any:
        sent.append(repr(request))
        raise AssertionError("a request was sent")

    async def refuse_async(self: Any, request: Any) -> Any:
        sent.append(repr(request))
        raise AssertionError("a request was sent")

    monkeypatch.setattr(SyncTransport, "send", refuse_sync)
    monkeypatch.setattr(AsyncBitrix24Client, "_send", refuse_async)
    yield sent
    assert sent == []
    stats = portal.stats()
    assert (stats["requests"], stats["oauth_requests"]) == (0, 0)


def _fill(value: Any, portal: Any) -> Any:
    if isinstance(value, str):
        netloc = portal.base_url.split("://", 1)[1]
        return value.format(base=portal.base_url, netloc=netloc, code=CODE)
    if isinstance(value, dict):
        return {k: _fill(v, portal) for k, v in value.items()}
    return value


def _bad_conn(monkeypatch: pytest.MonkeyPatch, portal: Any, case: Case) -> str:
    data = {"conn_type": "bitrix24", **_fill(case.conn, portal)}
    set_conn(monkeypatch, "rel_bad_conn", json.dumps(data))
    return "rel_bad_conn"


def _operator(conn_id: str, **args: Any) -> SaveQuickAnswerOperator:
    values = {"chat_id": SEED.support_chat_id, "message_id": SEED.new_text_message_id, **args}
    return SaveQuickAnswerOperator(task_id="save", bitrix24_conn_id=conn_id, **values)


def _sensor(conn_id: str, deferrable: bool, **args: Any) -> SessionHistorySensor:
    values = {"session_id": SEED.support_latest_session_id, "author": "operator", **args}
    return SessionHistorySensor(
        task_id="wait", bitrix24_conn_id=conn_id, deferrable=deferrable, poke_interval=0.1, timeout=5, **values
    )


def _expect(case: Case, task: Any, leak_scan: Any, *, connection: bool) -> None:
    with pytest.raises(AirflowFailException) as info:
        task.execute(context={})
    leak_scan.exception(f"bad input {case.name}", info.value)
    message = str(info.value)
    prefix = f"INVALID_CONNECTION: {field_title(case.field)}:" if connection else f"{case.field}:"
    assert message.startswith(prefix), message


@pytest.mark.parametrize("case", OPERATOR_CASES, ids=str)
def test_error_names_the_argument_when_an_operator_argument_is_wrong(portal, monkeypatch, leak_scan, no_requests, case):
    conn_id = webhook_conn(monkeypatch, portal, "rel_inputs")
    _expect(case, _operator(conn_id, **case.args), leak_scan, connection=False)


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
@pytest.mark.parametrize("case", SENSOR_CASES, ids=str)
def test_error_names_the_argument_when_a_sensor_argument_is_wrong(
    portal, monkeypatch, leak_scan, no_requests, case, deferrable
):
    conn_id = webhook_conn(monkeypatch, portal, "rel_inputs")
    _expect(case, _sensor(conn_id, deferrable, **case.args), leak_scan, connection=False)


@pytest.mark.parametrize("task", ["operator", "sensor"])
@pytest.mark.parametrize("case", CONNECTION_CASES, ids=str)
def test_error_names_the_field_when_a_connection_field_is_wrong(
    portal, monkeypatch, leak_scan, no_requests, case, task
):
    conn_id = _bad_conn(monkeypatch, portal, case)
    built = _operator(conn_id) if task == "operator" else _sensor(conn_id, deferrable=True)
    _expect(case, built, leak_scan, connection=True)


def test_error_names_the_connection_when_it_is_undefined(portal, monkeypatch, leak_scan, no_requests):
    with pytest.raises(Exception, match="rel_no_such_connection") as info:
        _operator("rel_no_such_connection").execute(context={})
    leak_scan.exception("undefined connection", info.value)


def test_the_cases_cover_every_argument_and_connection_field():
    operator_fields = {c.field.split("[")[0] for c in OPERATOR_CASES}
    sensor_fields = {c.field for c in SENSOR_CASES}
    assert operator_fields == {"chat_id", "message_id"}
    assert sensor_fields == {"session_id", "chat_id", "after_message_id", "author", "text_pattern", "min_messages"}
    conn_fields = {c.field.split(" ")[0] for c in CONNECTION_CASES}
    assert {"host", "login", "password", "port", "extra.timeout", "extra.max_retries", "extra.verify"} <= conn_fields
    assert {"extra.rate_limit", "extra.auth_type", "extra.client_secret", "extra.refresh_token"} <= conn_fields
    assert {"extra.expires_at", "extra.oauth_url"} <= conn_fields
    assert len(OPERATOR_CASES) + len(SENSOR_CASES) + len(CONNECTION_CASES) >= 30


def test_a_failing_case_report_shows_no_secret_of_its_connection():
    """pytest prints a failing test's arguments: the canaries of a case's connection must not be among them."""
    with_secrets = [c for c in CONNECTION_CASES if c.conn and any(s in repr(c.conn) for s in CANARIES)]
    assert with_secrets, "no connection case carries a canary: the check below would prove nothing"
    leaking = [c.name for c in with_secrets if any(s in repr(c) for s in CANARIES)]
    assert leaking == []
