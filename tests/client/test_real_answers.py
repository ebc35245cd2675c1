"""
Real Bitrix24 answers, replayed through the client.

Every body of ``tests/fixtures/real/`` (recorded from real portals or given as answer examples by the official
documentation, see its README) is served with its recorded HTTP status by a loopback replay server, and the real
:class:`Bitrix24Client` (for a subset also :class:`AsyncBitrix24Client`) calls it. The tests assert what the caller
gets: the ``result``, ``next``/``total``, the flat rows of ``list_all``, the :class:`BatchItem` of every batch
command, the exception with its code, status and ``retryable``, the token pair of an OAuth refresh, and the
message records of a session history.

What is asserted is the behaviour real answers call for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

import pytest

from airflow_provider_bitrix24.client import (
    AsyncBitrix24Client,
    Bitrix24ApiError,
    Bitrix24AuthError,
    Bitrix24Client,
    Bitrix24Error,
    Bitrix24MethodError,
    Bitrix24OperationTimeLimitError,
    Bitrix24PermissionError,
    Bitrix24RateLimitError,
    Bitrix24ServerError,
    Bitrix24TokenExpiredError,
    RetryPolicy,
    TokenPair,
    limits,
    oauth,
    parse_connection,
)
from airflow_provider_bitrix24.history import extract_messages
from tests.real_answers import RealAnswer, load, load_all
from tests.replay import WEBHOOK_CODE, WEBHOOK_USER, ReplayServer

ANSWERS = load_all()
_USED: set[str] = set()


def _cases(answers: Any) -> list[Any]:
    params = []
    for answer in answers:
        _USED.add(answer.name)
        params.append(pytest.param(answer, id=answer.name))
    return params


def _select(predicate: Callable[[RealAnswer], bool]) -> list[RealAnswer]:
    return [a for a in ANSWERS if predicate(a)]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    limits.forget_limits()
    oauth.forget_oauth_sessions()
    with ReplayServer() as server:
        yield server
    oauth.forget_oauth_sessions()


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the client asked for (it never really sleeps in these tests)."""
    return []


@pytest.fixture
def make_client(replay: ReplayServer, sleeps: list[float]) -> Iterator[Callable[..., Bitrix24Client]]:
    clients: list[Bitrix24Client] = []

    def make(retry_policy: RetryPolicy | None = None, **extra: Any) -> Bitrix24Client:
        config = parse_connection(host=replay.webhook_url, extra={"max_retries": 0, "timeout": 10, **extra})
        client = Bitrix24Client(config, sleep=sleeps.append, retry_policy=retry_policy or RetryPolicy(max_retries=0))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _oauth_client(replay: ReplayServer, store: Any = None) -> Bitrix24Client:
    config = parse_connection(
        host=replay.base_url,
        extra={
            "auth_type": "oauth",
            "client_id": "local.0000000000000a.00000000",
            "client_secret": "fake-client-secret-00000000",
            "refresh_token": "old-refresh-token-0000",
            "access_token": "old-access-token-0000",
            "oauth_url": replay.oauth_url,
            "max_retries": 0,
            "timeout": 10,
        },
    )
    return Bitrix24Client(config, sleep=lambda _: None, token_store=store, retry_policy=RetryPolicy(max_retries=0))


def _section(value: Any) -> dict[str, Any]:
    """A batch section as the portal means it: PHP sends an empty map as [] and a 0..n-1 map as a list."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _rows(result: Any) -> list[Any]:
    """The rows of a list page: the result itself, or the one list a wrapped page holds."""
    if isinstance(result, list):
        return result
    assert isinstance(result, Mapping), result
    assert len(result) == 1, result
    (rows,) = result.values()
    assert isinstance(rows, list)
    return rows


def _assert_readable(err: Bitrix24Error, code: str, description: str) -> None:
    text = str(err)
    assert not text.startswith(":"), text
    if code:
        assert text.startswith(code), text
    if description:
        assert description.rstrip(".") in text, text


# --------------------------------------------------------------------------- success envelopes

SUCCESS = _select(lambda a: not a.is_error and a.kind != "oauth")


@pytest.mark.parametrize("answer", _cases(SUCCESS))
def test_success_envelope_reaches_the_caller(answer, replay, make_client):
    replay.queue(answer.served_status, answer.body)
    client = make_client()

    envelope = client.run(client.engine.call_flow(answer.method, answer.params))

    assert envelope.result == answer.body["result"]
    assert envelope.next == answer.body.get("next")
    assert envelope.total == answer.body.get("total")
    assert dict(envelope.time) == dict(answer.time)
    if "operating" in answer.time and "operating_reset_at" in answer.time:
        reported = client.engine.limiter.tracker.last_reported(answer.method)
        assert reported == (answer.time["operating"], answer.time["operating_reset_at"])
    (request,) = replay.requests
    assert request.path == f"/rest/{WEBHOOK_USER}/{WEBHOOK_CODE}/{answer.method}"
    assert request.json == dict(answer.params)


# --------------------------------------------------------------------------- list methods

LISTS = _select(lambda a: a.kind == "list" and not a.is_error)


@pytest.mark.parametrize("answer", _cases(LISTS))
def test_list_all_returns_the_flat_rows_and_limit_counts_rows(answer, replay, make_client):
    rows = _rows(answer.body["result"])
    replay.queue(answer.served_status, answer.body)

    got = make_client().list_all(answer.method, answer.params, limit=len(rows))

    assert got == rows
    assert len(replay.requests) == 1


def test_list_all_stops_when_next_does_not_advance(replay, make_client):
    page = load("fast_bitrix24/list_crm_lead_list_plain_first_page")  # next 50
    replay.queue(200, page.body)
    replay.queue(200, page.body)  # the portal answers start=50 with next 50 again

    with pytest.raises(Bitrix24Error) as info:
        make_client().list_all(page.method, page.params)

    assert len(replay.requests) == 2
    assert replay.requests[1].json["start"] == 50
    assert "next" in str(info.value)


# --------------------------------------------------------------------------- batch

BATCHES = _select(lambda a: a.kind == "batch" and not a.is_error)


def _commands(answer: RealAnswer) -> tuple[list[str], Any]:
    commands = answer.batch_commands()
    keys = list(commands)
    if keys == [str(i) for i in range(len(keys))]:
        return keys, [commands[k] for k in keys]  # the portal may answer such keys as JSON lists
    return keys, commands


@pytest.mark.parametrize("answer", _cases(BATCHES))
def test_batch_sends_the_keys_unchanged_and_maps_every_section_back(answer, replay, make_client):
    keys, commands = _commands(answer)
    halt = bool(answer.params.get("halt"))
    replay.queue(answer.served_status, answer.body)

    items = make_client().batch(commands, halt=halt)

    sent = replay.requests[0].json["cmd"]
    sent_by_key = dict(sent) if isinstance(sent, Mapping) else {str(i): c for i, c in enumerate(sent)}
    assert list(sent_by_key) == keys
    for key, text in sent_by_key.items():  # e.g. $result[get_user][UF_DEPARTMENT][0] arrives as written
        method, _, query = text.partition("?")
        assert (method, dict(parse_qsl(query, keep_blank_values=True))) == answer.batch_commands()[key]
    body = answer.body["result"]
    ok, errors = _section(body["result"]), _section(body["result_error"])
    totals, nexts = _section(body["result_total"]), _section(body["result_next"])
    assert [item.key for item in items] == keys
    for item in items:
        method = commands[int(item.key)][0] if isinstance(commands, list) else commands[item.key][0]
        assert item.method == method
        if item.key in ok:
            assert item.ok, item.error
            assert item.result == ok[item.key]
            assert item.total == totals.get(item.key)
            assert item.next == nexts.get(item.key)
        elif item.key in errors:
            raw = errors[item.key]
            assert item.error is not None
            assert not item.ok
            assert item.error.code == (raw["error"] or "UNKNOWN_ERROR")
            _assert_readable(item.error, raw["error"], raw["error_description"])
            if raw["error"] == "OPERATION_TIME_LIMIT":
                assert isinstance(item.error, Bitrix24OperationTimeLimitError)
                assert item.error.retryable
            else:
                assert not item.error.retryable
        else:
            assert halt, f"{item.key} is in no section of a halt=0 answer"
            assert item.error is not None
            assert not item.error.retryable


def test_batch_command_missing_from_every_section_is_a_retryable_bad_answer(replay, make_client):
    # The recorded batch carried more commands than the one blocked command its answer names.
    answer = load("b24phpsdk/batch_operation_time_limit_a")
    (blocked_key,) = answer.batch_commands()
    replay.queue(200, answer.body)

    items = make_client().batch(
        {blocked_key: ("crm.contact.update", {"ID": 1}), "next_one": ("crm.contact.update", {"ID": 2})}
    )

    blocked, missing = items
    assert isinstance(blocked.error, Bitrix24OperationTimeLimitError)
    assert blocked.error.retryable
    assert missing.error is not None
    assert missing.error.retryable
    assert missing.error.code != "NOT_EXECUTED"


# --------------------------------------------------------------------------- error answers

#: name -> (accepted classes, retryable); a class tuple means "any of these".
EXPECTED_ERRORS: dict[str, tuple[tuple[type[Bitrix24ApiError], ...], bool]] = {
    "b24phpsdk/error_payment_required_subscription_ended": ((Bitrix24AuthError, Bitrix24PermissionError), False),
    "b24pysdk/error_access_denied": ((Bitrix24PermissionError,), False),
    "b24pysdk/error_application_not_found": ((Bitrix24AuthError,), False),
    "b24pysdk/error_authorization_error": ((Bitrix24AuthError,), False),
    "b24pysdk/error_error_oauth": ((Bitrix24AuthError, Bitrix24PermissionError), False),
    "b24pysdk/error_expired_token": ((Bitrix24TokenExpiredError,), False),
    "b24pysdk/error_insufficient_scope_token": ((Bitrix24PermissionError,), False),
    "b24pysdk/error_insufficient_scope_webhook": ((Bitrix24PermissionError,), False),
    "b24pysdk/error_invalid_credentials": ((Bitrix24AuthError,), False),
    "b24pysdk/error_invalid_token": ((Bitrix24AuthError,), False),
    "b24pysdk/error_method_confirm_waiting": ((Bitrix24AuthError,), False),
    "b24pysdk/error_no_auth_found": ((Bitrix24AuthError,), False),
    "b24pysdk/error_operation_time_limit": ((Bitrix24OperationTimeLimitError,), True),
    "b24pysdk/error_overload_limit": ((Bitrix24ApiError,), False),
    "b24pysdk/error_payment_required": ((Bitrix24AuthError, Bitrix24PermissionError), False),
    "b24pysdk/error_portal_deleted": ((Bitrix24ApiError,), False),
    "b24pysdk/error_query_limit_exceeded": ((Bitrix24RateLimitError,), True),
    "b24pysdk/error_unexpected_answer": ((Bitrix24ServerError,), True),
    "b24pysdk/error_user_access_error": ((Bitrix24PermissionError,), False),
    "b24restdocs/dialog_get_access_error": ((Bitrix24PermissionError,), False),
    "b24restdocs/error_code_zero_string": ((Bitrix24ApiError,), False),
    "b24restdocs/error_empty_code": ((Bitrix24ApiError,), False),
    "b24restdocs/error_invalid_arg_value": ((Bitrix24ApiError,), False),
    "b24restdocs/history_missing_param": ((Bitrix24ApiError,), False),
    "b24restdocs/quick_save_cant_save": ((Bitrix24MethodError,), False),
}
ERRORS = _select(lambda a: a.is_error and a.kind != "oauth")


def test_every_error_answer_has_an_expectation():
    assert {a.name for a in ERRORS} == set(EXPECTED_ERRORS)


@pytest.mark.parametrize(
    "answer",
    _cases(ERRORS),
)
def test_error_answer_raises_the_mapped_error(answer, replay, make_client):
    classes, retryable = EXPECTED_ERRORS[answer.name]
    # A whole-call OPERATION_TIME_LIMIT is waited out and looked at once more before it is raised.
    sends = 2 if answer.body["error"] == "OPERATION_TIME_LIMIT" else 1
    for _ in range(sends):
        replay.queue(answer.served_status, answer.body)

    with pytest.raises(Bitrix24ApiError) as info:
        make_client().call(answer.method, answer.params)

    err = info.value
    assert isinstance(err, classes), type(err)
    assert err.code == (answer.body["error"] or "UNKNOWN_ERROR")
    assert err.status == answer.served_status
    assert err.method == answer.method
    assert err.retryable is retryable
    _assert_readable(err, err.code, answer.body.get("error_description", ""))
    assert len(replay.requests) == sends


def test_whole_call_operation_time_limit_waits_long_enough_before_the_one_recheck(replay, make_client, sleeps):
    blocked = load("b24pysdk/error_operation_time_limit")
    page = load("b24restdocs/list_crm_item_list_wrapped")
    replay.queue(blocked.served_status, blocked.body)
    replay.queue(page.served_status, page.body)

    result = make_client(retry_policy=RetryPolicy(max_retries=5)).call(page.method, page.params)

    assert result == page.body["result"]
    assert len(replay.requests) == 2
    assert sum(sleeps) >= 10


# --------------------------------------------------------------------------- OAuth token server


class _Store:
    def __init__(self) -> None:
        self.saved: list[TokenPair] = []

    def load(self) -> TokenPair | None:
        return self.saved[-1] if self.saved else None

    def save(self, pair: TokenPair) -> None:
        self.saved.append(pair)


TOKENS = _select(lambda a: a.kind == "oauth" and not a.is_error)


@pytest.mark.parametrize("answer", _cases(TOKENS))
def test_refresh_answer_becomes_the_token_pair_the_call_then_uses(answer, replay):
    expired, saved = load("b24pysdk/error_expired_token"), load("b24restdocs/quick_save_true")
    replay.queue(expired.served_status, expired.body)
    replay.queue(answer.served_status, answer.body)
    replay.queue(saved.served_status, saved.body)
    store = _Store()
    before = time.time()

    with _oauth_client(replay, store) as client:
        assert client.call(saved.method, saved.params) is True

    first, refresh, retried = replay.requests
    assert first.json["auth"] == "old-access-token-0000"
    assert (refresh.method, refresh.path) == ("GET", "/oauth/token/")
    assert refresh.query["grant_type"] == ["refresh_token"]
    assert refresh.query["refresh_token"] == ["old-refresh-token-0000"]
    assert refresh.query["client_id"] == ["local.0000000000000a.00000000"]
    assert retried.json["auth"] == answer.body["access_token"]
    (pair,) = store.saved
    assert (pair.access_token, pair.refresh_token) == (answer.body["access_token"], answer.body["refresh_token"])
    if "expires" in answer.body:
        assert pair.expires_at == answer.body["expires"]
    else:
        assert pair.expires_at is not None
        assert before + answer.body["expires_in"] <= pair.expires_at <= time.time() + answer.body["expires_in"]


TOKEN_ERRORS = _select(lambda a: a.kind == "oauth" and a.is_error)


@pytest.mark.parametrize(
    "answer",
    _cases(TOKEN_ERRORS),
)
def test_token_server_error_is_a_permanent_auth_error(answer, replay):
    expired = load("b24pysdk/error_expired_token")
    replay.queue(expired.served_status, expired.body)
    replay.queue(answer.served_status, answer.body)

    with _oauth_client(replay) as client, pytest.raises(Bitrix24ApiError) as info:
        client.call("profile")

    err = info.value
    assert isinstance(err, (Bitrix24AuthError, Bitrix24PermissionError)), type(err)
    assert not err.retryable
    assert err.code == answer.body["error"]
    assert err.status == answer.served_status
    assert err.method == "oauth/token"
    _assert_readable(err, answer.body["error"], answer.body.get("error_description", ""))
    assert len(replay.requests) == 2


# --------------------------------------------------------------------------- session history

#: name -> (session id, chat id, [(message id, author type), ...] ascending by id)
EXPECTED_HISTORY = {
    "b24restdocs/history_session_321_open": (321, 1763, [(85833, "system"), (85851, "operator")]),
    "b24restdocs/history_session_469_closed": (
        469,
        1982,
        [
            (18113, "system"),
            (18114, "system"),
            (18115, "system"),
            (18116, "client"),
            (18117, "system"),
            (18119, "system"),
            (18148, "system"),
            (19008, "system"),
            (19009, "system"),
        ],
    ),
}
HISTORIES = _select(lambda a: a.kind == "history" and not a.is_error)


def test_every_history_answer_has_an_expectation():
    assert {a.name for a in HISTORIES} == set(EXPECTED_HISTORY)


@pytest.mark.parametrize("answer", _cases(HISTORIES))
def test_session_history_becomes_message_records(answer, replay, make_client):
    session_id, chat_id, messages = EXPECTED_HISTORY[answer.name]
    replay.queue(answer.served_status, answer.body)

    records = extract_messages(make_client().call(answer.method, answer.params))

    assert [(r["id"], r["author_type"]) for r in records] == messages
    assert {r["session_id"] for r in records} == {session_id}
    assert {r["chat_id"] for r in records} == {chat_id}
    raw = answer.body["result"]["message"]
    for record in records:
        assert record["text"] == raw[str(record["id"])]["text"]
        assert record["date"] == raw[str(record["id"])]["date"]


# --------------------------------------------------------------------------- the async client


def _run_async(replay: ReplayServer, coro_factory: Callable[[AsyncBitrix24Client], Any]) -> Any:
    async def main() -> Any:
        async def no_sleep(_: float) -> None:
            return None

        config = parse_connection(host=replay.webhook_url, extra={"max_retries": 0, "timeout": 10})
        async with AsyncBitrix24Client(config, sleep=no_sleep, retry_policy=RetryPolicy(max_retries=0)) as client:
            return await coro_factory(client)

    return asyncio.run(main())


@pytest.mark.parametrize(
    "answer",
    _cases(
        [
            load("b24restdocs/quick_save_true"),
            load("b24restdocs/dialog_get_chat_1364_session_0"),
            load("b24phpsdk/call_result_int_operating_reset_at"),
        ]
    ),
)
def test_async_client_returns_the_same_result(answer, replay):
    replay.queue(answer.served_status, answer.body)

    result = _run_async(replay, lambda client: client.call(answer.method, answer.params))

    assert result == answer.body["result"]


@pytest.mark.parametrize(
    "answer",
    _cases([load("fast_bitrix24/list_crm_lead_list_plain_one_page"), load("b24restdocs/list_tasks_task_list_wrapped")]),
)
def test_async_list_all_returns_the_flat_rows(answer, replay):
    replay.queue(answer.served_status, answer.body)

    rows = _run_async(replay, lambda client: client.list_all(answer.method, answer.params))

    assert rows == _rows(answer.body["result"])


@pytest.mark.parametrize(
    "answer", _cases([load("b24pysdk/error_query_limit_exceeded"), load("b24pysdk/error_insufficient_scope_webhook")])
)
def test_async_client_raises_the_same_error(answer, replay):
    classes, retryable = EXPECTED_ERRORS[answer.name]
    replay.queue(answer.served_status, answer.body)

    with pytest.raises(Bitrix24ApiError) as info:
        _run_async(replay, lambda client: client.call(answer.method, answer.params))

    assert isinstance(info.value, classes)
    assert (info.value.code, info.value.status, info.value.retryable) == (
        answer.body["error"],
        answer.served_status,
        retryable,
    )


def test_async_batch_maps_user_keys_back(replay):
    answer = load("fast_bitrix24/batch_crm_status_entity_items_named_keys")
    replay.queue(answer.served_status, answer.body)

    items = _run_async(replay, lambda client: client.batch(answer.batch_commands()))

    assert list(replay.requests[0].json["cmd"]) == ["statuses", "sources"]
    assert {item.key: item.result for item in items} == answer.body["result"]["result"]


# --------------------------------------------------------------------------- coverage of the corpus


def test_every_recording_is_given_to_a_test_case():
    assert len(ANSWERS) >= 25
    assert len({a.source["repo"] for a in ANSWERS}) >= 3
    assert {a.name for a in ANSWERS} <= _USED
