"""
The connection form as the provider info and the Airflow 2 widgets describe it.

``tests/browser`` checks what Airflow 3's UI makes of it; these checks need no browser and run in make test.
"""

from __future__ import annotations

import json

import pytest

from airflow_provider_bitrix24.client.config import FIELD_LABELS, RateLimit, parse_connection
from airflow_provider_bitrix24.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR, get_provider_info

CODE = "form-webhook-0000"


def test_the_connection_type_carries_the_form():
    (connection_type,) = get_provider_info()["connection-types"]
    assert connection_type["ui-field-behaviour"] is UI_FIELD_BEHAVIOUR
    assert connection_type["conn-fields"] is CONN_FIELDS


def test_labels_are_the_ones_configuration_errors_name():
    for field, label in UI_FIELD_BEHAVIOUR["relabeling"].items():
        assert FIELD_LABELS[field] == label
    for name, spec in CONN_FIELDS.items():
        assert FIELD_LABELS[f"extra.{name}"] == spec["label"]


def test_no_selector_offers_a_null_option():
    for name, spec in CONN_FIELDS.items():
        schema = spec["schema"]
        if "enum" in schema:
            assert None not in schema["enum"], name
            assert schema["default"] in schema["enum"], name
            assert set(schema.get("values_display", {})) <= set(schema["enum"]), name


def test_the_auth_type_selector_offers_webhook_and_oauth_by_name():
    schema = CONN_FIELDS["auth_type"]["schema"]
    assert schema["enum"] == ["webhook", "oauth"]
    assert schema["values_display"] == {"webhook": "Inbound webhook", "oauth": "OAuth application"}


def test_rate_limit_takes_a_preset_name_or_an_object():
    # A plain string field shows a stored object as "[object Object]"; with "object" among the types Airflow 3
    # shows it as JSON (tests/browser proves it).
    schema = CONN_FIELDS["rate_limit"]["schema"]
    assert {"string", "object"} <= set(schema["type"])
    assert '{"burst": N, "per_second": R}' in CONN_FIELDS["rate_limit"]["description"]


def test_secret_fields_are_masked():
    masked = {name for name, spec in CONN_FIELDS.items() if spec["schema"].get("format") == "password"}
    assert masked == {"client_secret", "refresh_token", "access_token"}
    assert "password" not in UI_FIELD_BEHAVIOUR["hidden-fields"]


def test_the_placeholders_lead_to_the_split_webhook_form():
    placeholders = UI_FIELD_BEHAVIOUR["placeholders"]
    # The host placeholder shows a portal URL, not a webhook URL with its code, and says where the code goes.
    assert placeholders["host"].startswith("https://your-portal.bitrix24.com;")
    assert "/rest/" not in placeholders["host"]
    assert "Webhook code (password)" in placeholders["host"]
    assert len(placeholders["host"]) <= 70  # longer ones are cut in Airflow 3's form
    assert "masked" in placeholders["password"]
    # The help says why: the host is shown in clear.
    help_text = CONN_FIELDS["auth_type"]["description"]
    for title in ("Portal or webhook URL (host)", "Webhook user ID (login)", "Webhook code (password)"):
        assert title in help_text
    assert "in clear" in help_text


def test_what_the_airflow_3_form_sends_for_a_split_webhook_parses():
    # The extra exactly as Airflow 3.3's form sends it: every extra field, null when left empty.
    extra = {name: None for name in CONN_FIELDS} | {"auth_type": "webhook", "rate_limit": "standard"}
    config = parse_connection(host="https://your-portal.bitrix24.com", login="1", password=CODE, extra=extra)
    assert config.rate_limit == RateLimit(50, 2.0)
    assert config.auth.secrets == (CODE,)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("enterprise", RateLimit(250, 5.0)), ({"burst": 5, "per_second": 2}, RateLimit(5, 2.0))],
)
def test_what_the_form_sends_for_the_rate_limit_parses(typed, expected):
    extra = {"auth_type": "webhook", "rate_limit": typed}
    config = parse_connection(host="https://p.bitrix24.com", login="1", password=CODE, extra=extra)
    assert config.rate_limit == expected


def test_the_defaults_of_the_form_make_a_valid_connection():
    defaults = {name: spec["schema"]["default"] for name, spec in CONN_FIELDS.items() if "default" in spec["schema"]}
    assert parse_connection(host=f"https://p.bitrix24.com/rest/1/{CODE}/", extra=defaults).rate_limit == RateLimit(
        50, 2.0
    )
    assert json.dumps(defaults)  # what the form stores is JSON


def test_the_airflow_2_form_uses_only_the_field_classes_airflow_2_accepts():
    pytest.importorskip("wtforms", reason="Airflow 3 reads the form from the provider info instead")
    pytest.importorskip("flask_appbuilder")
    from wtforms import BooleanField, IntegerField, PasswordField, StringField

    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

    widgets = Bitrix24Hook.get_connection_form_widgets()
    # Airflow 2 drops the whole hook ("Error when importing hook!") for any other field class, a SelectField too.
    assert {w.field_class for w in widgets.values()} <= {IntegerField, PasswordField, StringField, BooleanField}
    masked = {name for name, w in widgets.items() if w.field_class is PasswordField}
    assert masked == {"client_secret", "refresh_token", "access_token"}
    behaviour = Bitrix24Hook.get_ui_field_behaviour()
    assert behaviour["placeholders"] == UI_FIELD_BEHAVIOUR["placeholders"]
    assert behaviour["relabeling"] == UI_FIELD_BEHAVIOUR["relabeling"]
