"""Parsing of query strings and bodies the way PHP reads them."""

from __future__ import annotations

import pytest

from airflow_provider_bitrix24.sandbox.params import is_true, merge, parse_body, parse_query, to_int


def test_bracket_names_nest_and_append():
    parsed = parse_query(
        "fields[TITLE]=My%20company&fields[PHONE][0][VALUE]=112233&fields[PHONE][0][VALUE_TYPE]=WORK"
        "&select[]=ID&select[]=NAME&plain=a+b"
    )
    assert parsed == {
        "fields": {"TITLE": "My company", "PHONE": [{"VALUE": "112233", "VALUE_TYPE": "WORK"}]},
        "select": ["ID", "NAME"],
        "plain": "a b",
    }


def test_numeric_top_level_keys_stay_a_map():
    assert parse_query("0=123&1[POST_MESSAGE]=hi") == {"0": "123", "1": {"POST_MESSAGE": "hi"}}


def test_encoded_command_strings_survive_one_decoding():
    parsed = parse_query("cmd[a]=user.get%3FID%3D1%26start%3D0&halt=1")
    assert parsed == {"cmd": {"a": "user.get?ID=1&start=0"}, "halt": "1"}


def test_json_body_and_broken_json():
    assert parse_body(b'{"CHAT_ID": 1, "X": [1]}', "application/json") == {"CHAT_ID": 1, "X": [1]}
    assert parse_body(b"{broken", "application/json; charset=utf-8") == {}
    assert parse_body(b"[1, 2]", "application/json") == {}


def test_multipart_body_with_fields_and_a_file():
    boundary = "XyZ"
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="CHAT_ID"\r\n\r\n'
        b"1763\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="fields[NAME]"\r\n\r\n'
        b"Caf\xc3\xa9\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
        b"hello\r\n"
        b"--XyZ--\r\n"
    )
    parsed = parse_body(body, f"multipart/form-data; boundary={boundary}")
    assert parsed == {
        "CHAT_ID": "1763",
        "fields": {"NAME": "Café"},
        "file": {"name": "a.txt", "size": 5, "content_type": "text/plain"},
    }


def test_merge_lets_the_body_win():
    assert merge({"A": "1", "B": "2"}, {"B": "3"}) == {"A": "1", "B": "3"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), ("", 0), ("abc", 0), ("42", 42), (" 7x", 7), (3.9, 3), (True, 1), (-5, -5), ([1], 0)],
)
def test_to_int_reads_like_php(value, expected):
    assert to_int(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (1, True), ("1", True), ("Y", True), ("true", True), (0, False), ("0", False), ("N", False)],
)
def test_is_true(value, expected):
    assert is_true(value) is expected
