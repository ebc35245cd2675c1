"""Bad inputs fail the task before any request, naming the parameter, the value and its position."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator, message_ids

OTHER_DIGITS = "is not a number: only the ASCII digits 0-9 are accepted"
OUT_OF_RANGE = "is out of range: the portal accepts ids up to 9223372036854775807 (2**63-1)"

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
    # Digits other than ASCII 0-9, doubled signs and ids beyond the portal's range: never converted.
    ("\u0661\u0667\u0666\u0663", 1, f"chat_id: '\u0661\u0667\u0666\u0663' {OTHER_DIGITS}"),
    ("\uff11\uff12", 1, f"chat_id: '\uff11\uff12' {OTHER_DIGITS}"),
    ("\u00b2", 1, f"chat_id: '\u00b2' {OTHER_DIGITS}"),
    ("--5", 1, "chat_id: '--5' is not a number"),
    ("+-5", 1, "chat_id: '+-5' is not a number"),
    ("1" * 20, 1, f"chat_id: '{'1' * 20}' {OUT_OF_RANGE}"),
    (2**63, 1, f"chat_id: 9223372036854775808 {OUT_OF_RANGE}"),
    ("9223372036854775808", 1, f"chat_id: '9223372036854775808' {OUT_OF_RANGE}"),
    ("7" * 5000, 1, f"chat_id: '{'7' * 76}... {OUT_OF_RANGE}"),
    (1e18, 1, "chat_id: 1e+18 is too large to be exact as a float; pass it as an int or a string"),
    (float("nan"), 1, "chat_id: nan is not a finite number"),
    (float("-inf"), 1, "chat_id: -inf is not a finite number"),
    (1763, "\u00b2", f"message_id: '\u00b2' {OTHER_DIGITS}"),
    (1763, [5, "\u0665"], f"message_id[1]: '\u0665' {OTHER_DIGITS}"),
    (1763, [{"id": "\uff15"}], f"message_id[0]['id']: '\uff15' {OTHER_DIGITS}"),
    (1763, "[5, '--6']", "message_id[1]: '--6' is not a number"),
    (1763, [2**64], f"message_id[0]: 18446744073709551616 {OUT_OF_RANGE}"),
    (1763, "[{[1]: 2}]", "message_id: '[{[1]: 2}]' looks like a list but cannot be parsed"),
    (1763, "[" + "9" * 5000 + "]", f"message_id: '[{'9' * 75}... looks like a list but cannot be parsed"),
    (1763, [{1: "a", "text": "b"}], "message_id[0]: a message dict needs an 'id' key, got keys ['1', 'text']"),
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
        (" +7 ", [7]),
        ("0042", [42]),
        ([str(2**63 - 1)], [2**63 - 1]),
        (2.0**53, [2**53]),
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
