"""Keyset listing (start=-1, by id) against the sandbox's crm.activity.list, and the plan's rules on its own."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_bitrix24.client import AsyncBitrix24Client, Bitrix24Client, parse_connection
from airflow_provider_bitrix24.client.errors import Bitrix24ConfigError, Bitrix24ResponseError
from airflow_provider_bitrix24.client.listing import KeysetPlan
from airflow_provider_bitrix24.sandbox.crm import ACTIVITY_ID_BASE, GEN_EPOCH

METHOD = "crm.activity.list"
START = "2026-03-21T00:00:00+00:00"


def _generate(sandbox, sessions: int) -> list[int]:
    sandbox.configure(generated_sessions=sessions, generated_messages=0)
    sandbox.reset(keep_config=True)
    state = sandbox.engine.state
    return sorted(ACTIVITY_ID_BASE + s.id for s in state.sessions.values() if s.date_create >= GEN_EPOCH)


def _client(sandbox) -> Bitrix24Client:
    return Bitrix24Client(parse_connection(host=sandbox.webhook_url, login=None, password=None, port=None, extra={}))


def _params() -> dict:
    return {"filter": {"PROVIDER_ID": "IMOPENLINES_SESSION", ">=LAST_UPDATED": START}, "select": ["ID"]}


def _requests_implied(rows: int, pages_per_request: int) -> int:
    """Requests of a keyset listing: pages until the first short one, 1, then 2, 4, ... up to the cap per request."""
    pages, done, size, requests = rows // 50 + 1, 0, 1, 0
    while done < pages:
        requests += 1
        done += size
        size = min(pages_per_request, max(2, size * 2)) if pages_per_request > 1 else 1
    return requests


@pytest.mark.parametrize("rows", [0, 1, 50, 51, 10_000])
def test_every_row_once_in_order_with_the_requests_keyset_mode_implies(sandbox, rows):
    expected = _generate(sandbox, rows)
    assert len(expected) == rows
    with _client(sandbox) as client:
        got = [int(row["ID"]) for row in client.iter_list(METHOD, _params())]
    assert got == expected
    stats = sandbox.stats()["by_method"]
    requests = _requests_implied(rows, 50)
    assert stats.get(METHOD, 0) == 1  # the first page is a plain call
    assert stats.get("batch", 0) == requests - 1
    if rows == 10_000:
        assert requests == 9  # 201 pages: 1 + 2 + 4 + 8 + 16 + 32 + 50 + 50 + 50 (38 used)


@pytest.mark.parametrize("rows", [0, 1, 50, 51])
def test_one_page_per_request_pages_without_batch(sandbox, rows):
    expected = _generate(sandbox, rows)
    with _client(sandbox) as client:
        got = [int(row["ID"]) for row in client.iter_list(METHOD, _params(), pages_per_request=1)]
    assert got == expected
    assert sandbox.stats()["by_method"] == {METHOD: rows // 50 + 1}


def test_keyset_requests_never_count(sandbox):
    _generate(sandbox, 120)
    seen = []
    with _client(sandbox) as client:
        for row in client.iter_list(METHOD, _params(), pages_per_request=1):
            seen.append(row)
        # Offset paging for comparison: the portal counts and says where the next page starts.
        page = client.run(client.engine.call_flow(METHOD, {**_params(), "start": 0}))
    assert len(seen) == 120
    assert page.total == 120
    assert page.next == 50
    keyset = client.run(client.engine.call_flow(METHOD, {**_params(), "start": -1}))
    assert keyset.next is None
    assert not keyset.total


def test_rows_stream_as_they_arrive(sandbox):
    _generate(sandbox, 500)
    with _client(sandbox) as client:
        rows = client.iter_list(METHOD, _params())
        first = next(rows)
        assert int(first["ID"]) > 0
        assert sandbox.stats()["requests"] == 1
        rows.close()


def test_a_greater_than_id_filter_resumes_after_it(sandbox):
    expected = _generate(sandbox, 120)
    params = _params()
    params["filter"][">ID"] = expected[69]
    with _client(sandbox) as client:
        got = [int(row["ID"]) for row in client.iter_list(METHOD, params)]
    assert got == expected[70:]


def test_select_without_id_gets_the_id_added(sandbox):
    _generate(sandbox, 3)
    params = {"filter": {">=LAST_UPDATED": START}, "select": ["ASSOCIATED_ENTITY_ID"]}
    with _client(sandbox) as client:
        rows = list(client.iter_list(METHOD, params))
    assert [set(r) for r in rows] == [{"ID", "ASSOCIATED_ENTITY_ID"}] * 3


def test_async_twin_lists_the_same_rows(sandbox):
    expected = _generate(sandbox, 151)

    async def collect() -> list[int]:
        config = parse_connection(host=sandbox.webhook_url, login=None, password=None, port=None, extra={})
        async with AsyncBitrix24Client(config) as client:
            return [int(row["ID"]) async for row in client.iter_list(METHOD, _params())]

    assert asyncio.run(collect()) == expected
    assert sandbox.stats()["by_method"] == {METHOD: 1, "batch": 2}


def test_the_hook_delegates_to_the_client(sandbox, webhook_conn):
    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

    expected = _generate(sandbox, 60)
    assert [int(r["ID"]) for r in Bitrix24Hook(bitrix24_conn_id=webhook_conn).iter_list(METHOD, _params())] == expected


def test_missing_scope_fails_at_the_first_request(sandbox):
    from airflow_provider_bitrix24.client.errors import Bitrix24PermissionError

    with (
        Bitrix24Client(
            parse_connection(host=sandbox.limited_webhook_url, login=None, password=None, port=None, extra={})
        ) as client,
        pytest.raises(Bitrix24PermissionError, match="insufficient_scope"),
    ):
        list(client.iter_list(METHOD, _params()))
    assert sandbox.stats()["requests"] == 1


# -- the plan on its own ---------------------------------------------------------------------------------------------


def _wrapped(key: str, ids: list, id_key: str = "id") -> dict:
    return {key: [{id_key: i, "title": f"row {i}"} for i in ids]}


def test_wrapped_rows_and_lower_case_ids_of_crm_item_list():
    plan = KeysetPlan("crm.item.list", {"entityTypeId": 1, "filter": {"stageId": "NEW"}})
    ((_key, (_method, params)),) = plan.next_commands()
    assert params == {"entityTypeId": 1, "filter": {"stageId": "NEW"}, "order": {"id": "ASC"}, "start": -1}
    rows = plan.feed([_wrapped("items", list(range(1, 51)))])
    assert len(rows) == 50
    assert plan.last_id == 50
    commands = plan.next_commands()
    assert [k for k, _ in commands] == ["p0", "p1"]
    assert commands[0][1][1]["filter"] == {"stageId": "NEW", ">id": 50}
    assert commands[1][1][1]["filter"][">id"] == "$result[p0][items][49][id]"
    rows = plan.feed([_wrapped("items", list(range(51, 101))), _wrapped("items", [101])])
    assert [r["id"] for r in rows] == list(range(51, 102))
    assert plan.done


def test_tasks_task_list_string_ids_in_a_tasks_wrapper():
    plan = KeysetPlan("tasks.task.list", {"select": ["TITLE"]})
    (_, (_, params)), *_ = plan.next_commands()
    assert params["order"] == {"ID": "ASC"}
    assert params["select"] == ["ID", "TITLE"]
    plan.feed([_wrapped("tasks", [str(i) for i in range(8000, 8050)])])
    commands = plan.next_commands()
    assert commands[1][1][1]["filter"][">ID"] == "$result[p0][tasks][49][id]"
    assert plan.last_id == 8049


def test_pages_after_the_first_short_one_are_discarded():
    plan = KeysetPlan(METHOD)
    plan.feed([[{"ID": str(i)} for i in range(1, 51)]])
    plan.next_commands()
    # The second command's reference did not resolve: whatever it answered is not read.
    rows = plan.feed([[{"ID": "51"}], [{"ID": "1"}, {"ID": "2"}]])
    assert [r["ID"] for r in rows] == ["51"]
    assert plan.done
    assert plan.next_commands() == []


def test_a_later_commands_error_falls_back_to_one_plain_call():
    from airflow_provider_bitrix24.client.errors import Bitrix24ServerError

    plan = KeysetPlan(METHOD)
    plan.feed([[{"ID": str(i)} for i in range(1, 51)]])
    plan.next_commands()
    rows = plan.feed([[{"ID": str(i)} for i in range(51, 101)], Bitrix24ServerError("X", retryable=True)])
    assert len(rows) == 50
    assert not plan.done
    commands = plan.next_commands()
    assert len(commands) == 1
    assert commands[0][1][1]["filter"] == {">ID": 100}


def test_ids_that_do_not_grow_are_an_error():
    plan = KeysetPlan(METHOD)
    with pytest.raises(Bitrix24ResponseError, match="does not follow"):
        plan.feed([[{"ID": "5"}, {"ID": "4"}]])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"order": {"TITLE": "ASC"}}, "order"),
        ({"order": {"ID": "DESC"}}, "order"),
        ({"filter": "x"}, "filter"),
        ({"filter": {">ID": "abc"}}, "filter"),
        ({"select": "ID"}, "select"),
        ("x", "params"),
    ],
)
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(Bitrix24ConfigError, match=field):
        KeysetPlan(METHOD, params)


def test_pages_per_request_is_checked():
    with pytest.raises(Bitrix24ConfigError, match="pages_per_request"):
        KeysetPlan(METHOD, pages_per_request=51)
