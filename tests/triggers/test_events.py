"""The trigger events: what the trigger writes, the sensor reads back to the same outcome."""

from __future__ import annotations

from airflow_provider_bitrix24.client.errors import Bitrix24Error, Bitrix24PermissionError
from airflow_provider_bitrix24.triggers.events import (
    decode_event,
    encode_argument_error,
    encode_client_error,
    encode_failure,
    encode_messages,
)


def test_messages_round_trip():
    messages = [{"id": 7, "text": "hi"}]
    outcome = decode_event(encode_messages(messages))
    assert outcome.messages == messages
    assert outcome.error is None


def test_client_error_round_trips_its_fields():
    err = Bitrix24PermissionError("ACCESS_DENIED", "no", status=403, method="imopenlines.session.history.get")
    outcome = decode_event(encode_client_error(err))
    assert isinstance(outcome.error, Bitrix24Error)
    assert (outcome.error.code, outcome.error.description, outcome.error.status) == ("ACCESS_DENIED", "no", 403)
    assert outcome.error.method == "imopenlines.session.history.get"
    assert outcome.error.retryable is False


def test_argument_errors_are_permanent_and_failures_retryable():
    bad = decode_event(encode_argument_error("text_pattern: bad"))
    assert (bad.failure, bad.retryable) == ("text_pattern: bad", False)
    crash = decode_event(encode_failure(KeyError("x")))
    assert (crash.failure, crash.retryable) == ("KeyError: 'x'", True)


def test_an_event_without_retryable_is_read_as_retryable():
    assert decode_event({"status": "error", "message": "odd"}).retryable is None
