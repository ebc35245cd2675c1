"""Bitrix24Operator: any REST method once, every page of a list, or a batch; errors classified as elsewhere."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_bitrix24.operators.bitrix24 import OUTCOME_KEY, Bitrix24Operator
from airflow_provider_bitrix24.sandbox.state import SEED

GROUP = f"chat{SEED.group_chat_id}"


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def run(**kwargs: Any) -> tuple[Any, FakeTI]:
    ti = FakeTI()
    op = Bitrix24Operator(task_id="call", **kwargs)
    return op.execute({"ti": ti}), ti  # type: ignore[arg-type]


# -- arguments


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "method, commands"),
        ({"method": "profile", "commands": ["profile"]}, "method, commands"),
        ({"commands": ["profile"], "api_params": {"a": 1}}, "api_params"),
        ({"method": "user.get", "all_pages": True, "limit": 0}, "limit"),
    ],
)
def test_arguments_that_cannot_work_fail_at_dag_parse_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Bitrix24Operator(task_id="call", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "crm.deal.update/../x"}, "method:"),
        ({"method": ""}, "method:"),
        ({"method": "profile", "api_params": ["ID", 5]}, "api_params: must be a dict"),
        ({"method": "profile", "api_params": "{'ID': "}, "api_params: .* cannot be parsed"),
        ({"commands": ["profile", {"method": "bad method"}]}, r"commands\[1\]\.method"),
        ({"commands": [("profile", None), ("scope", "oops")]}, r"commands\[1\]\[1\]: must be a dict"),
        ({"commands": [{"method": "profile", "parms": {}}]}, r"commands\[0\]: unknown keys"),
        ({"commands": []}, "commands: is empty"),
    ],
)
def test_bad_values_fail_without_a_request_naming_the_field(sandbox, webhook_conn, kwargs, field):
    with pytest.raises(AirflowFailException, match=field):
        run(**kwargs)
    assert sandbox.stats()["requests"] == 0


def test_the_operator_keeps_airflows_params_apart():
    op = Bitrix24Operator(task_id="call", method="profile", api_params={"x": 1}, params={"chat": 5})
    assert op.api_params == {"x": 1}
    assert op.params["chat"] == 5
    assert "api_params" in Bitrix24Operator.template_fields
    assert "params" not in Bitrix24Operator.template_fields


# -- one call, every page


def test_one_call_returns_the_result(sandbox, webhook_conn):
    result, _ = run(method="profile")
    assert result["ID"] == str(SEED.webhook_user_id)


def test_nested_params_and_a_rendered_dict_reach_the_portal(sandbox, webhook_conn):
    result, _ = run(method="im.message.add", api_params="{'DIALOG_ID': 'chat1900', 'MESSAGE': 'from a template'}")
    last = sandbox.chat_messages(SEED.group_chat_id)[-1]
    assert (last["id"], last["text"]) == (result, "from a template")
    attach = [{"MESSAGE": "line 1"}, {"LINK": {"NAME": "Deal", "LINK": "https://example.com/deal/5"}}]
    result, _ = run(method="im.message.add", api_params={"DIALOG_ID": GROUP, "MESSAGE": "x", "ATTACH": attach})
    assert sandbox.chat_messages(SEED.group_chat_id)[-1]["params"]["ATTACH"] == attach


def test_all_pages_reads_every_page(sandbox, webhook_conn):
    sandbox.configure(list_page_size=2)
    rows, _ = run(method="user.get", all_pages=True)
    assert [int(row["ID"]) for row in rows] == [1, 2, 3]
    assert sandbox.stats()["by_method"]["user.get"] == 2
    rows, _ = run(method="user.get", all_pages=True, limit=2)
    assert len(rows) == 2


# -- errors


def test_an_unknown_method_fails_at_once_with_its_code_and_a_hint(sandbox, webhook_conn):
    with pytest.raises(
        AirflowFailException, match=r"ERROR_METHOD_NOT_FOUND.*HTTP 404.*Hint: the method does not exist"
    ):
        run(method="crm.deal.update", api_params={"ID": 1, "FIELDS": {"TITLE": "x"}})
    assert sandbox.stats()["requests"] == 1


def test_a_missing_scope_fails_at_once(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_BITRIX24_DEFAULT", sandbox.airflow_conn_json("limited"))
    with pytest.raises(AirflowFailException, match="insufficient_scope"):
        run(method="im.message.add", api_params={"DIALOG_ID": GROUP, "MESSAGE": "x"})


def test_a_transient_error_that_outlasts_the_retries_leaves_it_to_airflow(sandbox, webhook_conn, fast_retries):
    sandbox.inject_fault("profile", "error", count=20, error="INTERNAL_SERVER_ERROR")
    with pytest.raises(AirflowException) as caught:
        run(method="profile")
    assert not isinstance(caught.value, AirflowFailException)
    assert "transient" in str(caught.value)


# -- batches


def test_batch_keeps_results_and_errors_apart(sandbox, webhook_conn):
    outcome, _ = run(
        commands={
            "me": ("profile", None),
            "post": {"method": "im.message.add", "params": {"DIALOG_ID": GROUP, "MESSAGE": "batch"}},
            "nope": "crm.deal.update",
            "empty": ("im.message.add", {"DIALOG_ID": GROUP, "MESSAGE": ""}),
        },
        fail_on_error=False,
    )
    assert list(outcome["results"]) == ["me", "post"]
    assert outcome["results"]["me"]["ID"] == str(SEED.webhook_user_id)
    assert outcome["results"]["post"] == sandbox.chat_messages(SEED.group_chat_id)[-1]["id"]
    assert outcome["errors"] == {
        "nope": {"code": "ERROR_METHOD_NOT_FOUND", "description": "Method not found!", "retryable": False},
        "empty": {"code": "MESSAGE_EMPTY", "description": "Message text is not provided", "retryable": False},
    }


def test_many_commands_go_in_requests_of_50(sandbox, webhook_conn):
    outcome, _ = run(commands=[("im.message.add", {"DIALOG_ID": GROUP, "MESSAGE": f"n{i}"}) for i in range(120)])
    assert list(outcome["results"]) == [str(i) for i in range(120)]
    assert outcome["errors"] == {}
    assert sandbox.stats()["by_method"]["batch"] == 3
    texts = [m["text"] for m in sandbox.chat_messages(SEED.group_chat_id)[-120:]]
    assert sorted(texts) == sorted(f"n{i}" for i in range(120))  # requests run side by side: any order


def test_failed_commands_fail_the_task_after_pushing_the_outcome(sandbox, webhook_conn):
    with pytest.raises(AirflowFailException, match=r"1 of 2 command.*nope: ERROR_METHOD_NOT_FOUND") as caught:
        run(commands={"me": "profile", "nope": "crm.deal.update"})
    assert OUTCOME_KEY in str(caught.value)


def test_failed_commands_outcome_is_in_xcom(sandbox, webhook_conn):
    ti = FakeTI()
    op = Bitrix24Operator(task_id="call", commands={"me": "profile", "nope": "crm.deal.update"})
    with pytest.raises(AirflowFailException):
        op.execute({"ti": ti})  # type: ignore[arg-type]
    assert set(ti.pushed[OUTCOME_KEY]["results"]) == {"me"}
    assert set(ti.pushed[OUTCOME_KEY]["errors"]) == {"nope"}


def test_only_transient_command_errors_leave_it_to_airflows_retries(sandbox, webhook_conn, fast_retries):
    sandbox.inject_fault("profile", "error", count=50, error="INTERNAL_SERVER_ERROR", in_batch=True)
    with pytest.raises(AirflowException) as caught:
        run(commands={"me": "profile", "scopes": "scope"})
    assert not isinstance(caught.value, AirflowFailException)
    assert "transient" in str(caught.value)


def test_a_batch_whose_requests_fail_is_classified_like_one_call(sandbox, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_BITRIX24_DEFAULT", sandbox.airflow_conn_json("webhook").replace("webhook-0000", "webhook-9999")
    )
    with pytest.raises(AirflowFailException, match=r"NO_AUTH_FOUND|INVALID_CREDENTIALS"):
        run(commands=["profile", "scope"])


def test_a_request_failing_for_good_pushes_what_the_portal_already_did(sandbox, monkeypatch):
    """Commands that are not idempotent must not run twice: the outcome of every command reaches XCom first."""
    import json

    conn = json.loads(sandbox.airflow_conn_json("webhook"))
    conn["extra"] = {**conn.get("extra", {}), "max_retries": 0, "rate_limit": {"burst": 1, "per_second": 20}}
    monkeypatch.setenv("AIRFLOW_CONN_BITRIX24_DEFAULT", json.dumps(conn))
    sandbox.inject_fault("batch", "slow", count=1, delay=0.01)  # the first request is answered
    sandbox.inject_fault("batch", "error", count=1, error="INVALID_CREDENTIALS")  # the second is refused for good
    commands = [("im.message.add", {"DIALOG_ID": GROUP, "MESSAGE": f"lead {i}"}) for i in range(150)]
    ti = FakeTI()
    with pytest.raises(AirflowFailException, match=r"150 command\(s\): 50 done, 50 failed, 0 sent without an answer"):
        Bitrix24Operator(task_id="call", commands=commands).execute({"ti": ti})  # type: ignore[arg-type]
    outcome = ti.pushed[OUTCOME_KEY]
    keys = [str(i) for i in range(150)]
    assert list(outcome["results"]) == keys[:50]
    assert [k for k in keys if outcome["outcomes"][k] == "done"] == keys[:50]
    assert [k for k in keys if outcome["outcomes"][k] == "failed"] == keys[50:100]
    assert [k for k in keys if outcome["outcomes"][k] == "not_sent"] == keys[100:]
    assert {outcome["errors"][k]["code"] for k in keys[100:]} == {"NOT_EXECUTED"}
    posted = [m["text"] for m in sandbox.chat_messages(SEED.group_chat_id)]
    assert sorted(t for t in posted if t.startswith("lead ")) == sorted(f"lead {i}" for i in range(50))


def test_all_pages_in_keyset_mode_reads_every_row_without_paging_by_next(sandbox, webhook_conn):
    sandbox.configure(generated_sessions=120, generated_messages=0)
    sandbox.reset(keep_config=True)
    params = {"filter": {"PROVIDER_ID": "IMOPENLINES_SESSION"}, "select": ["ID"]}
    by_next, _ = run(method="crm.activity.list", api_params=params, all_pages=True)
    paged = sandbox.stats()["requests"]
    rows, _ = run(method="crm.activity.list", api_params=params, all_pages=True, keyset=True)
    keyset_requests = sandbox.stats()["requests"] - paged
    assert [int(r["ID"]) for r in rows] == sorted(int(r["ID"]) for r in by_next)
    assert len(rows) >= 120
    assert keyset_requests < paged  # pages travel several to a batch, and no page counts the list
    limited, _ = run(method="crm.activity.list", api_params=params, all_pages=True, keyset=True, limit=7)
    assert limited == rows[:7]
    with pytest.raises(ValueError, match="keyset: only with all_pages"):
        Bitrix24Operator(task_id="call", method="crm.activity.list", keyset=True)
