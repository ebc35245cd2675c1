"""Reading and filtering a session history payload (no portal, no Airflow)."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest

from airflow_provider_bitrix24.history import (
    AUTHOR_TYPES,
    MAX_TEXT_CHARS,
    METHOD,
    SEARCH_WORK,
    HistoryArgumentError,
    HistoryFilter,
    HistoryMatcher,
    HistoryPayloadError,
    classify_author,
    extract_messages,
    history_query,
    unreadable_answer,
)

#: "12" in fullwidth digits.
FULLWIDTH = "\uff11\uff12"

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
    assert rebuilt.text_pattern == "a+"
    assert rebuilt.search("baaa")
    assert not rebuilt.search("bbb")


def test_session_id_wins_over_chat_id():
    assert history_query(321, 1763) == {"SESSION_ID": 321}
    assert history_query(None, 1763) == {"CHAT_ID": 1763}
    with pytest.raises(HistoryArgumentError, match="session_id or chat_id is required"):
        history_query(None, None)


# --------------------------------------------------------------------------- RE2 patterns


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", r"invalid escape sequence: \\1"),
        (r"(?=refund)", r"invalid perl operator: \(\?="),
        (r"(?!refund)x", r"invalid perl operator: \(\?!"),
        (r"(?<=order )\d+", r"invalid perl operator: \(\?<="),
        (r"(?<!no )refund", r"invalid perl operator: \(\?<!"),
        (r"(?>a+)b", r"invalid perl operator: \(\?>"),
        (r"a++", r"bad repetition operator: \+\+"),
        (r"(?x) a b # spaced", r"invalid perl operator: \(\?x"),
        (r"end\Z", r"invalid escape sequence: \\Z"),
        (r"a{1001}", r"bad repetition operator|invalid repetition size"),
    ],
)
def test_patterns_re2_refuses_are_argument_errors_naming_text_pattern(pattern, reason):
    with pytest.raises(HistoryArgumentError) as info:
        HistoryFilter.build(text_pattern=pattern)
    message = str(info.value)
    assert message.startswith(f"text_pattern: {pattern!r} is not a valid regular expression in RE2 syntax ("), message
    assert re.search(reason, message), message
    assert "no backreferences, lookahead or lookbehind" in message
    assert info.value.name == "text_pattern"


def test_a_pattern_too_large_for_a_bounded_search_is_refused():
    with pytest.raises(HistoryArgumentError, match=r"^text_pattern: .* is too large: it compiles to \d+ RE2 instr"):
        HistoryFilter.build(text_pattern=r"(.*\p{L}){20}")
    words = "|".join(f"word{i}" for i in range(100))
    assert HistoryFilter.build(text_pattern=rf"(?i)\b({words})\b").search("say WORD42 please")


def test_a_large_pattern_is_searched_in_fewer_characters():
    small = HistoryFilter.build(text_pattern=r"(?i)order #\d+")
    large = HistoryFilter.build(text_pattern=r"(?:.*a){1000}!")
    assert small.search_chars == MAX_TEXT_CHARS
    assert 1_000 <= large.search_chars < MAX_TEXT_CHARS
    assert large.regex.programsize * large.search_chars <= SEARCH_WORK
    text = "a" * 1000 + "!"
    assert large.search(text)
    assert not large.search("." * large.search_chars + text)


def test_a_pattern_that_is_not_text_is_refused():
    with pytest.raises(HistoryArgumentError, match=r"^text_pattern: 42 is not a string"):
        HistoryFilter.build(text_pattern=42)  # type: ignore[arg-type]
    with pytest.raises(HistoryArgumentError, match=r"^text_pattern: .* is not valid Unicode text"):
        HistoryFilter.build(text_pattern="a\ud800")


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        (r"(?i)observers?", "Open the OBSERVERS tab", True),
        (r"Order #\d+", "Order #123 shipped", True),
        (r"(?P<order>\d{4,})", "заказ 12345", True),
        (r"(?i)привет", "ПРИВЕТ, как дела?", True),
        (r"\p{Cyrillic}+", "hello мир", True),
        (r"^\w+$", "привет", False),  # \w is ASCII in RE2
        (r"^[\p{L}\p{N}_]+$", "привет", True),
        (r"done$", "done\n", False),  # $ is the very end without (?m)
        (r"(?m)done$", "done\nthanks", True),
        (r"a.*?b", "a-b-b", True),
    ],
)
def test_re2_syntax_matches_like_the_sensor_docstring_says(pattern, text, found):
    assert HistoryFilter.build(text_pattern=pattern).search(text) is found


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"^(\w+\s?)+\?$", r"(.*a){20}!!", r"(x+x+)+y"])
def test_evil_patterns_take_linear_time_on_crafted_messages(pattern):
    history_filter = HistoryFilter.build(text_pattern=pattern)
    started = time.perf_counter()
    for length in (30, 1_000, MAX_TEXT_CHARS):
        assert not history_filter.search("a" * (length - 1) + "!")
    # A backtracking engine takes minutes on the 30-character message alone.
    assert time.perf_counter() - started < 2.0


def test_only_the_first_characters_of_a_huge_text_are_searched():
    history_filter = HistoryFilter.build(text_pattern="needle")
    assert history_filter.search("x" * (MAX_TEXT_CHARS - 6) + "needle")
    assert not history_filter.search("x" * MAX_TEXT_CHARS + "needle")


def test_a_lone_surrogate_in_a_message_does_not_break_the_search():
    history_filter = HistoryFilter.build(text_pattern="refund")
    assert history_filter.search("\ud83d refund please")
    assert not history_filter.search("\ud83d hello")


# --------------------------------------------------------------------------- incremental matching


class CountingRegex:
    """A compiled pattern that counts its searches and the texts they read."""

    def __init__(self, regex):
        self.regex = regex
        self.programsize = regex.programsize
        self.texts: list[str] = []

    def search(self, text):
        self.texts.append(text)
        return self.regex.search(text)


def _counting(**kwargs) -> tuple[HistoryFilter, CountingRegex]:
    history_filter = HistoryFilter.build(**kwargs)
    spy = CountingRegex(history_filter.regex)
    return dataclasses.replace(history_filter, regex=spy), spy


def _history(messages: dict[int, tuple[str, str]]) -> dict:
    """A history answer with ``{id: (sender id, text)}`` messages of a client (587) and an operator (103)."""
    return {
        "chatId": 1763,
        "sessionId": 321,
        "message": {
            str(i): {"id": str(i), "chatid": "1763", "senderid": sender, "date": "d", "text": text}
            for i, (sender, text) in messages.items()
        },
        "users": PAYLOAD["users"],
    }


def test_a_message_matched_once_is_not_matched_again():
    history_filter, spy = _counting(text_pattern=r"(?i)refund", author="client")
    matcher = HistoryMatcher(history_filter)
    first = _history({1: ("587", "I want a refund"), 2: ("587", "hello"), 3: ("103", "refund? sure")})
    assert [m["id"] for m in matcher.feed(first)] == [1]
    assert spy.texts == ["I want a refund", "hello"]  # the operator's message is not even searched
    assert [m["id"] for m in matcher.feed(first)] == [1]
    assert len(spy.texts) == 2
    second = _history({**{i: ("587", "x") for i in (1, 2, 3)}, 4: ("587", "REFUND now")})
    assert [m["id"] for m in matcher.feed(second)] == [1, 4]
    assert spy.texts[2:] == ["REFUND now"]
    assert matcher.seen == 4


def test_a_second_poll_with_a_thousand_old_messages_searches_only_the_new_one():
    history_filter, spy = _counting(text_pattern=r"(a+)+$", min_messages=2)
    matcher = HistoryMatcher(history_filter)
    old = {i: ("587", "a" * 29 + "!") for i in range(1, 1001)}
    old[500] = ("587", "aaaa")
    assert [m["id"] for m in matcher.feed(_history(old))] == [500]
    assert len(spy.texts) == 1000
    assert not matcher.is_met()
    matches = matcher.feed(_history({**old, 1001: ("587", "baa")}))
    assert len(spy.texts) == 1001
    assert spy.texts[-1] == "baa"
    assert [m["id"] for m in matches] == [500, 1001]
    assert matcher.is_met()
    assert history_filter.is_met(matches)


def test_a_past_deadline_searches_one_new_message_per_answer_in_id_order():
    history_filter, spy = _counting(text_pattern=r"^match", min_messages=2)
    matcher = HistoryMatcher(history_filter)
    answer = _history({5: ("587", "nope"), 3: ("587", "match 3"), 9: ("587", "match 9"), 7: ("587", "match 7")})
    assert [m["id"] for m in matcher.feed(answer, deadline=0.0)] == [3]
    assert (spy.texts, matcher.backlog) == (["match 3"], 3)
    assert [m["id"] for m in matcher.feed(answer, deadline=0.0)] == [3]
    assert (spy.texts[-1], matcher.backlog) == ("nope", 2)
    assert not matcher.is_met()
    assert [m["id"] for m in matcher.feed(answer, deadline=0.0)] == [3, 7]
    assert matcher.backlog == 1
    assert [m["id"] for m in matcher.feed(answer)] == [3, 7, 9]
    assert matcher.backlog == 0
    assert len(spy.texts) == 4


def test_messages_that_fail_on_id_or_author_cost_no_search_and_no_deadline():
    history_filter, spy = _counting(text_pattern="x", author="client", after_message_id=10)
    matcher = HistoryMatcher(history_filter)
    answer = _history({i: ("103", "x") for i in range(1, 200)} | {5: ("587", "x"), 300: ("587", "x")})
    assert [m["id"] for m in matcher.feed(answer, deadline=0.0)] == [300]
    assert spy.texts == ["x"]
    assert matcher.backlog == 0


def test_a_filter_without_pattern_searches_nothing():
    matcher = HistoryMatcher(HistoryFilter.build(author="client"))
    assert [m["id"] for m in matcher.feed(PAYLOAD, deadline=0.0)] == [85849]
    assert matcher.searches == 0


# --------------------------------------------------------------------------- what the portal sends


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "²"}, r"message id '²' is not a plain integer"),
        ({"id": "١٢٣"}, r"message id '١٢٣' is not a plain integer"),
        ({"id": "-5"}, r"message id '-5' is not a plain integer"),
        ({"id": "1e5"}, r"message id '1e5' is not a plain integer"),
        ({"id": 85851.0}, r"message id 85851.0 is not a plain integer"),
        ({"id": 10**30}, r"message id 1000000000000000000000000000000 is out of range"),
        ({"id": "9" * 4000}, r"message id '9999.*\.\.\. is out of range"),
        ({"senderid": "10\uff13"}, "sender of message 85851 '10\uff13' is not a plain integer"),
        ({"chatid": True}, r"chat of message 85851 True is not a plain integer"),
        ({"text": [[["deep"]]]}, r"the text of message 85851 is a list, not text"),
        ({"date": {"nested": 1}}, r"the date of message 85851 is a dict, not text"),
    ],
)
def test_ids_that_are_not_plain_integers_are_not_converted(change, message):
    result = {**PAYLOAD, "message": {"85851": {**PAYLOAD["message"]["85851"], **change}}}
    with pytest.raises(HistoryPayloadError, match=message):
        extract_messages(result)


def test_session_and_user_ids_are_read_strictly_too():
    with pytest.raises(HistoryPayloadError, match="sessionId '\uff13\uff12\uff11' is not a plain integer"):
        extract_messages({**PAYLOAD, "sessionId": "\uff13\uff12\uff11"})
    with pytest.raises(HistoryPayloadError, match=r"user id '1O3' is not a plain integer"):
        extract_messages({**PAYLOAD, "users": {"103": {"id": "1O3"}}})
    assert extract_messages({**PAYLOAD, "sessionId": "", "chatId": None})[0]["session_id"] is None


def test_a_bad_answer_becomes_a_client_error():
    try:
        extract_messages({**PAYLOAD, "sessionId": "²"})
    except HistoryPayloadError as exc:
        permanent = unreadable_answer(exc, "SESSION_ID=321")
    assert (permanent.code, permanent.retryable, permanent.method) == ("INVALID_RESPONSE", False, METHOD)
    assert str(permanent).startswith("INVALID_RESPONSE: the history of SESSION_ID=321 cannot be read: sessionId")
    other = unreadable_answer(RecursionError("maximum recursion depth exceeded"), "CHAT_ID=1763")
    assert (other.code, other.retryable) == ("INVALID_RESPONSE", True)
    assert "RecursionError: maximum recursion depth exceeded" in str(other)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"after_message_id": "١٢٣"}, r"^after_message_id: '١٢٣' is not a message id: it is not a number: only"),
        (
            {"after_message_id": FULLWIDTH},
            f"^after_message_id: '{FULLWIDTH}' is not a message id: it is not a number: only",
        ),
        ({"after_message_id": "²"}, r"^after_message_id: '²' is not a message id: it is not a number: only the"),
        ({"after_message_id": "--5"}, r"^after_message_id: '--5' is not a message id: it is not a number$"),
        ({"after_message_id": "+-5"}, r"^after_message_id: '\+-5' is not a message id: it is not a number$"),
        ({"after_message_id": "9" * 19}, r"^after_message_id: '9{19}' is not a message id: it is out of range"),
        ({"after_message_id": 2**63}, r"^after_message_id: 9223372036854775808 is not a message id: it is out of"),
        ({"after_message_id": "1" * 5000}, r"^after_message_id: '1{60,}\.\.\. is not a message id: it is out of"),
        ({"after_message_id": 1e30}, r"^after_message_id: 1e\+30 is not a message id: it is too large to be exact"),
        ({"after_message_id": float("nan")}, r"^after_message_id: nan is not a message id: it is not a finite num"),
        ({"after_message_id": True}, r"^after_message_id: True is not a message id: it is not an integer"),
        ({"min_messages": "²"}, r"^min_messages: '²' is not a positive integer: it is not a number: only the"),
        ({"min_messages": "--2"}, r"^min_messages: '--2' is not a positive integer: it is not a number$"),
        ({"min_messages": 2**64}, r"^min_messages: 18446744073709551616 is not a positive integer: it is out of"),
        ({"min_messages": None}, r"^min_messages: None is not a positive integer"),
        ({"min_messages": True}, r"^min_messages: True is not a positive integer$"),
        ({"min_messages": -3}, r"^min_messages: -3 is not a positive integer$"),
    ],
)
def test_arguments_in_other_digits_or_out_of_range_are_refused_naming_them(kwargs, message):
    with pytest.raises(HistoryArgumentError, match=message):
        HistoryFilter.build(**kwargs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("85847", 85847), (" +85847 ", 85847), ("007", 7), (85847.0, 85847), (str(2**63 - 1), 2**63 - 1), (0, 0)],
)
def test_plain_ascii_numbers_are_accepted(value, expected):
    assert HistoryFilter.build(after_message_id=value).after_message_id == expected
    if expected:
        assert HistoryFilter.build(min_messages=value).min_messages == expected


def test_history_query_refuses_ids_out_of_the_portals_range():
    assert history_query(2**63 - 1, None) == {"SESSION_ID": 2**63 - 1}
    with pytest.raises(HistoryArgumentError, match=r"^session_id: 9223372036854775808 is out of range"):
        history_query(2**63, None)
    with pytest.raises(HistoryArgumentError, match=r"^chat_id: '12' is not a positive integer"):
        history_query(None, "12")  # type: ignore[arg-type]
    with pytest.raises(HistoryArgumentError, match=r"^session_id: True is not a positive integer"):
        history_query(True, None)
