"""The Bitrix24 connection form of Airflow 2's UI (Airflow 3 reads the form from the provider info)."""

from __future__ import annotations

from typing import Any


def ui_field_behaviour() -> dict[str, Any]:
    """Which standard fields the form hides, relabels and fills with placeholders."""
    from airflow_provider_bitrix24.get_provider_info import UI_FIELD_BEHAVIOUR

    return {
        "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
        "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
        "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
    }


def form_widgets() -> dict[str, Any]:
    """The form's extra fields, from :data:`~airflow_provider_bitrix24.get_provider_info.CONN_FIELDS`."""
    from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import IntegerField, PasswordField, StringField
    from wtforms.validators import NumberRange, Optional

    from airflow_provider_bitrix24.get_provider_info import CONN_FIELDS

    widgets: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        label, description = lazy_gettext(spec["label"]), spec.get("description", "")
        types = spec["schema"]["type"]
        if spec["schema"].get("format") == "password":
            widgets[name] = PasswordField(label, widget=BS3PasswordFieldWidget(), description=description)
        elif "integer" in types:
            widgets[name] = IntegerField(
                label, widget=BS3TextFieldWidget(), description=description, validators=[Optional(), NumberRange(0)]
            )
        else:
            widgets[name] = StringField(label, widget=BS3TextFieldWidget(), description=description)
    return widgets
