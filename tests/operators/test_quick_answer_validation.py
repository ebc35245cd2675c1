"""Bad inputs fail the task before any request, naming the parameter, the value and its position."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator, message_ids

BAD_INPUTS = [
    # (chat_id, message_id, the exact error message)
    (0, 1, "chat_id: 0 is not a positive integer"),
    (-3, 1, "chat_id: -3 is not a positive integer"),
    ("", 1, "chat_id: '' is an empty string"),
    (None, 1, "chat_id: None is not a positive integer"),
    (True, 1, "chat_id: True is not a positive integer"),
    ("chat1763", 1, "chat_id: 'chat1763' is not a number"),
    (17.5, 1, "chat_id: 17.5 is a fractional number, not an id"),
    (1763, [5, 0], "message_id[1]: 0 is not a positive integer"),
    (1763, [5, "x1"], "message_id[1]: 'x1' is not a number"),
    (1763, [None], "message_id[0]: None is not a positive integer"),
    (1763, [7, {"text": "hi"}], "message_id[1]: a message dict needs an 'id' key, got keys ['text']"),
    (1763, [{"id": -1}], "message_id[0]['id']: -1 is not a positive integer"),
    (1763, 2.5, "message_id: 2.5 is a fractional number, not an id"),
    (1763, False, "message_id: False is not a positive integer"),
    (1763, "[1, 2", "message_id: '[1, 2' looks like a list but cannot be parsed"),
    (1763, {1, 2}, "message_id: {1, 2} has type set, expected an integer"),
    (1763, ["12", " "], "message_id[1]: ' ' is an empty string"),
]


@pytest.mark.parametrize(("chat_id", "message_id", "message"), BAD_INPUTS)
def test_bad_input_fails_without_a_request(sandbox, webhook_conn, chat_id, message_id, message):
    op = SaveQuickAnswerOperator(task_id="save", chat_id=chat_id, message_id=message_id)
    with pytest.raises(AirflowFailException) as info:
        op.execute(context={})
    assert str(info.value) == message
    assert sandbox.stats()["requests"] == 0


def test_empty_list_skips_the_task_without_a_request(sandbox, webhook_conn):
    op = SaveQuickAnswerOperator(task_id="save", chat_id=1, message_id=[])
    with pytest.raises(AirflowSkipException, match="Nothing to save"):
        op.execute(context={})
    assert sandbox.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, [5]),
        ("5", [5]),
        (5.0, [5]),
        ([3, "3", 1, 3.0], [3, 1]),
        ("[4, 2, 4]", [4, 2]),
        ([{"id": 9, "text": "a"}, {"id": "8"}], [9, 8]),
        ("[{'id': 9}, {'id': 7}]", [9, 7]),
        ((1, 2), [1, 2]),
    ],
)
def test_message_ids_accepts_what_templates_and_the_sensor_produce(value, expected):
    assert message_ids(value) == expected


def test_bad_connection_fails_before_any_request(sandbox, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_BITRIX24_DEFAULT", '{"conn_type": "bitrix24", "host": "http://portal.example.com/rest/1/abcd/"}'
    )
    op = SaveQuickAnswerOperator(task_id="save", chat_id=1, message_id=2)
    with pytest.raises(
        AirflowFailException, match=r"^INVALID_CONNECTION: Portal or webhook URL \(host\): uses plain http"
    ):
        op.execute(context={})
    assert sandbox.stats()["requests"] == 0
