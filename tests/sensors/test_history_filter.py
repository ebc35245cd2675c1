"""Reading and filtering a session history payload (no portal, no Airflow)."""

from __future__ import annotations

import re

import pytest

from airflow_provider_bitrix24.history import (
    AUTHOR_TYPES,
    HistoryArgumentError,
    HistoryFilter,
    classify_author,
    extract_messages,
    history_query,
)

#: The shape of reference §7.2.1, trimmed: string ids, camelCase and collapsed keys, newest message first.
PAYLOAD = {
    "chatId": 1763,
    "canJoin": "Y",
    "sessionId": 321,
    "userId": "chat1763",
    "message": {
        "85851": {
            "id": "85851",
            "chatid": "1763",
            "senderid": "103",
            "recipientid": "chat1763",
            "date": "2026-03-11T13:12:46+01:00",
            "text": "Open the task card and click Observers",
            "textlegacy": "Open the task card and click Observers",
            "params": {"connectorMid": ["85853"], "fileId": [5437]},
        },
        "85849": {
            "id": "85849",
            "chatid": "1763",
            "senderid": "587",
            "recipientid": "chat1763",
            "date": "2026-03-11T13:11:00+01:00",
            "text": "How do I add an observer?",
            "params": [],
        },
        "85847": {
            "id": "85847",
            "chatid": "1763",
            "senderid": "12",
            "recipientid": "chat1763",
            "date": "2026-03-11T13:10:00+01:00",
            "text": "All operators are busy",
            "params": [],
        },
        "85833": {
            "id": "85833",
            "chatid": "1763",
            "senderid": "0",
            "recipientid": "chat1763",
            "date": "2026-03-11T13:09:25+01:00",
            "text": "[b]A new lead has been created[/b]",
            "params": {"attach": []},
        },
    },
    "users": {
        "103": {"id": "103", "name": "Samantha Johnson", "bot": False, "connector": False},
        "587": {"id": "587", "name": "John", "bot": False, "connector": True, "externalAuthId": "imconnector"},
        "12": {"id": "12", "name": "Helper", "bot": True, "connector": False},
    },
    "userInChat": {"1763": [103, 587]},
    "files": [],
}


def test_extract_messages_normalises_ids_and_orders_ascending():
    records = extract_messages(PAYLOAD)
    assert [r["id"] for r in records] == [85833, 85847, 85849, 85851]
    assert records[-1] == {
        "id": 85851,
        "chat_id": 1763,
        "session_id": 321,
        "author_id": 103,
        "author_type": "operator",
        "date": "2026-03-11T13:12:46+01:00",
        "text": "Open the task card and click Observers",
    }
    assert all(isinstance(r[k], int) for r in records for k in ("id", "chat_id", "session_id", "author_id"))


def test_authors_are_classified_from_the_users_map():
    by_id = {r["id"]: r["author_type"] for r in extract_messages(PAYLOAD)}
    assert by_id == {85833: "system", 85847: "bot", 85849: "client", 85851: "operator"}


@pytest.mark.parametrize(
    ("author_id", "user", "expected"),
    [
        (0, None, "system"),
        (0, {"connector": True}, "system"),
        (5, {"connector": True, "bot": True}, "client"),
        (5, {"bot": True}, "bot"),
        (5, {"bot": "Y"}, "bot"),
        (5, {"bot": False, "connector": False}, "operator"),
        (5, None, "operator"),
    ],
)
def test_classify_author(author_id, user, expected):
    assert classify_author(author_id, user) == expected


def test_empty_maps_sent_as_lists_are_handled():
    assert extract_messages({"chatId": 1, "sessionId": 2, "message": [], "users": []}) == []
    # ``users`` as [] while messages exist: senders cannot be told apart, so they count as operators.
    result = {
        "chatId": "1870",
        "sessionId": "391",
        "message": [{"id": "7", "chatid": "1870", "senderid": "108", "date": "d", "text": "hi"}],
        "users": [],
    }
    assert extract_messages(result) == [
        {
            "id": 7,
            "chat_id": 1870,
            "session_id": 391,
            "author_id": 108,
            "author_type": "operator",
            "date": "d",
            "text": "hi",
        }
    ]


@pytest.mark.parametrize("result", [None, [], "oops", {"message": "x"}, {"message": {"1": "not a dict"}}])
def test_malformed_results_give_no_messages(result):
    assert extract_messages(result) == []


def test_filter_by_id_author_and_pattern():
    records = extract_messages(PAYLOAD)
    assert [m["id"] for m in HistoryFilter.build().match(records)] == [85833, 85847, 85849, 85851]
    assert [m["id"] for m in HistoryFilter.build(after_message_id="85847").match(records)] == [85849, 85851]
    assert [m["id"] for m in HistoryFilter.build(author="operator").match(records)] == [85851]
    assert [m["id"] for m in HistoryFilter.build(author=["client", "bot"]).match(records)] == [85847, 85849]
    assert [m["id"] for m in HistoryFilter.build(text_pattern=r"(?i)observer").match(records)] == [85849, 85851]
    assert HistoryFilter.build(author="system", after_message_id=85833).match(records) == []


def test_min_messages_decides_when_the_wait_ends():
    records = extract_messages(PAYLOAD)
    two = HistoryFilter.build(author=["client", "operator"], min_messages=2)
    three = HistoryFilter.build(author=["client", "operator"], min_messages=3)
    assert two.is_met(two.match(records))
    assert not three.is_met(three.match(records))


def test_any_means_every_author_type():
    assert HistoryFilter.build(author="any").authors == frozenset(AUTHOR_TYPES)
    assert HistoryFilter.build(author=["any", "bot"]).authors == frozenset(AUTHOR_TYPES)
    assert HistoryFilter.build(author=" Client ").authors == {"client"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text_pattern": "(unclosed"}, r"^text_pattern: '\(unclosed' is not a valid regular expression"),
        ({"author": "customer"}, r"^author: 'customer' is not an author type"),
        ({"author": []}, r"^author: is empty"),
        ({"min_messages": 0}, r"^min_messages: 0 is not a positive integer"),
        ({"min_messages": "two"}, r"^min_messages: 'two'"),
        ({"after_message_id": "abc"}, r"^after_message_id: 'abc' is not a message id"),
        ({"after_message_id": -1}, r"^after_message_id: -1"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs, message):
    with pytest.raises(HistoryArgumentError, match=message):
        HistoryFilter.build(**kwargs)


def test_empty_after_message_id_means_every_message():
    assert HistoryFilter.build(after_message_id="").after_message_id is None
    assert HistoryFilter.build(after_message_id=0).after_message_id == 0


def test_filter_round_trips_through_plain_kwargs():
    original = HistoryFilter.build(after_message_id=5, author=["bot", "client"], text_pattern="a+", min_messages=2)
    plain = original.to_kwargs()
    assert plain == {"after_message_id": 5, "authors": ["bot", "client"], "text_pattern": "a+", "min_messages": 2}
    rebuilt = HistoryFilter.build(
        after_message_id=plain["after_message_id"],
        author=plain["authors"],
        text_pattern=plain["text_pattern"],
        min_messages=plain["min_messages"],
    )
    assert rebuilt == original
    assert rebuilt.pattern == re.compile("a+")


def test_session_id_wins_over_chat_id():
    assert history_query(321, 1763) == {"SESSION_ID": 321}
    assert history_query(None, 1763) == {"CHAT_ID": 1763}
    with pytest.raises(HistoryArgumentError, match="session_id or chat_id is required"):
        history_query(None, None)
