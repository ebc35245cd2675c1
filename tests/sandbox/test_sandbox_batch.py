"""The ``batch`` method: substitution, halt, limits, nested errors and PHP serialization quirks."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from airflow_provider_bitrix24.sandbox import SEED
from airflow_provider_bitrix24.sandbox.batch import substitute

SECTIONS = ["result", "result_error", "result_total", "result_next", "result_time"]


def test_batch_answer_has_five_sections_and_operating_in_its_own_time(http, portal):
    body = http.post(portal.webhook_url + "batch", json={"cmd": {"me": "profile"}}).json()
    assert list(body) == ["result", "time"]
    assert list(body["result"]) == SECTIONS
    assert body["result"]["result"]["me"]["ID"] == "1"
    # The outer time block carries the operating counter and its reset, as real batch answers do.
    assert list(body["time"]) == [
        "start", "finish", "duration", "processing", "date_start", "date_finish", "operating_reset_at", "operating",
    ]  # fmt: skip
    assert isinstance(body["time"]["operating"], float)
    assert isinstance(body["time"]["operating_reset_at"], int)
    command_time = body["result"]["result_time"]["me"]
    assert {"start", "finish", "duration", "processing", "date_start", "date_finish"} <= set(command_time)


def test_empty_sections_are_empty_arrays(api):
    result = api.ok("batch", {"cmd": {"me": "profile"}})
    assert result["result_error"] == []
    assert result["result_total"] == []
    assert result["result_next"] == []
    assert api.ok("batch", {"cmd": {}}) == {key: [] for key in SECTIONS}


def test_list_keyed_commands_serialize_as_arrays_until_a_gap_appears(api):
    clean = api.ok("batch", {"cmd": ["profile", "scope", "server.time"]})
    assert isinstance(clean["result"], list)
    assert isinstance(clean["result_time"], list)
    assert clean["result"][1] == ["imopenlines", "im", "imbot", "user", "crm"]
    gap = api.ok("batch", {"cmd": ["profile", "no.such.method", "server.time"]})
    assert set(gap["result"]) == {"0", "2"}
    assert gap["result_error"] == {"1": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}}


def test_references_to_earlier_results_are_substituted(api):
    result = api.ok(
        "batch",
        {
            "cmd": {
                "open": f"imopenlines.session.open?USER_CODE={quote(SEED.sales_user_code)}",
                "dialog": "imopenlines.dialog.get?CHAT_ID=$result[open][chatId]",
                "history": "imopenlines.session.history.get?CHAT_ID=$result[dialog][id]",
                "scopes": "scope",
                "embedded": "method.get?name=$result[scopes][0].message.quick.save",
            }
        },
    )["result"]
    assert result["dialog"]["id"] == SEED.sales_chat_id
    assert result["history"]["sessionId"] == SEED.sales_session_id
    assert result["embedded"] == {"isExisting": True, "isAvailable": True}


def test_next_and_total_sections_and_references(api, portal):
    portal.configure(list_page_size=2)
    result = api.ok("batch", {"cmd": {"page1": "user.get", "page2": "user.get?start=$next[page1]"}})
    assert [u["ID"] for u in result["result"]["page2"]] == ["3"]
    assert result["result_next"] == {"page1": 2}
    assert result["result_total"] == {"page1": 3, "page2": 3}


def test_substitution_rules():
    sections = {
        "result": {"a": {"ID": "7", "LIST": [{"X": 1}], "MAP": {"k": "v"}}},
        "error": {"b": {"error": "CHAT_ID", "error_description": "Chat ID is invalid."}},
        "next": {"a": 50},
        "total": {},
        "time": {"a": {"start": 1.5}},
    }
    params = {
        "whole": "$result[a][MAP]",
        "nested": {"deep": ["$result[a][LIST][0][X]"]},
        "embedded": "id-$result[a][ID]-$next[a]",
        "array_in_string": "x$result[a][MAP]",
        "missing": "$result[a][NOPE][deeper]",
        "error": "$error[b][error]",
        "time": "$time[a][start]",
    }
    assert substitute(params, sections) == {
        "whole": {"k": "v"},
        "nested": {"deep": [1]},
        "embedded": "id-7-50",
        "array_in_string": "x$result[a][MAP]",
        "missing": {"ID": "7", "LIST": [{"X": 1}], "MAP": {"k": "v"}},
        "error": "CHAT_ID",
        "time": 1.5,
    }


@pytest.mark.parametrize("halt", [1, True, "1", "true"])
def test_halt_stops_at_the_first_error(api, halt):
    result = api.ok("batch", {"halt": halt, "cmd": ["profile", "no.such.method", "scope"]})
    assert len(result["result"]) == 1
    assert result["result"][0]["ID"] == "1"
    assert list(result["result_error"]) == ["1"]
    assert len(result["result_time"]) == 1


def test_without_halt_every_command_runs(api):
    result = api.ok("batch", {"halt": 0, "cmd": ["profile", "no.such.method", "scope"]})
    assert set(result["result"]) == {"0", "2"}


def test_commands_beyond_fifty_each_fail_with_batch_length_exceeded(api, portal):
    commands = {f"c{i}": "server.time" for i in range(53)}
    result = api.ok("batch", {"cmd": commands})
    assert len(result["result"]) == 50
    exceeded = {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"}
    assert result["result_error"] == {"c50": exceeded, "c51": exceeded, "c52": exceeded}
    halted = api.ok("batch", {"halt": 1, "cmd": commands})
    assert list(halted["result_error"]) == ["c50"]
    assert portal.stats()["by_status"] == {"200": 2}


def test_nested_batch_is_not_allowed(api):
    result = api.ok("batch", {"cmd": {"inner": "batch?cmd[a]=profile", "me": "profile"}})
    assert result["result_error"] == {
        "inner": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        }
    }
    assert result["result"]["me"]["ID"] == "1"


def test_missing_scope_inside_batch_has_an_empty_description(api, portal):
    result = api.ok(
        "batch",
        {"cmd": {"me": "profile", "chat": f"imopenlines.dialog.get?CHAT_ID={SEED.support_chat_id}"}},
        base=portal.limited_webhook_url,
    )
    assert result["result"]["me"]["ID"] == "2"
    assert result["result_error"] == {"chat": {"error": "insufficient_scope", "error_description": ""}}


def test_method_errors_inside_batch_keep_their_codes(api, portal):
    result = api.ok(
        "batch",
        {
            "cmd": {
                "bad_message": f"imopenlines.message.quick.save?CHAT_ID={SEED.support_chat_id}&MESSAGE_ID=1",
                "no_params": "imopenlines.session.history.get",
                "crm": "imopenlines.crm.chat.get?CRM_ENTITY_TYPE=lead",
            }
        },
    )
    assert result["result_error"]["bad_message"]["error"] == "CANT_SAVE_QUICK_ANSWER"
    assert result["result_error"]["no_params"]["error"] == "MISSING_REQUIRED_PARAM"
    assert result["result_error"]["crm"] == {
        "error": "ERROR_ARGUMENT",
        "error_description": "Argument 'CRM_ENTITY' is null or empty",
        "argument": "CRM_ENTITY",
    }
    stats = portal.stats()
    assert stats["batch_commands"] == 3
    assert stats["requests"] == 1


def test_batch_saves_many_quick_answers_in_one_request(api, portal):
    ids = list(SEED.bulk_message_ids[:50])
    cmd = [f"imopenlines.message.quick.save?CHAT_ID={SEED.bulk_chat_id}&MESSAGE_ID={m}" for m in ids]
    result = api.ok("batch", {"cmd": cmd})
    assert result["result"] == [True] * 50
    saved = {a["message_id"] for a in portal.quick_answers()}
    assert set(ids) <= saved


def test_oauth_batch_passes_the_token_to_commands(http, portal):
    body = {"auth": portal.oauth_access_token, "cmd": {"me": "profile", "admin": "user.admin"}}
    result = http.post(portal.base_url + "/rest/batch", json=body).json()["result"]
    assert set(result["result"]) == {"me", "admin"}
    assert result["result"]["me"]["ID"] == "1"
    assert result["result"]["admin"] is True
