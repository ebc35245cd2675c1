"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

INTEGRATION = "Bitrix24"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: its integration, hooks, operators, sensors, triggers and connection form."""
    return {
        "package-name": "airflow-provider-bitrix24",
        "name": "Bitrix24",
        "description": "Bitrix24 Open Lines: REST hook, quick-answer operator and session-history sensor.",
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://apidocs.bitrix24.com/api-reference/imopenlines/index.html",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": ["airflow_provider_bitrix24.hooks.bitrix24"]}],
        "operators": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_bitrix24.operators.quick_answer"]}
        ],
        "sensors": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_bitrix24.sensors.session_history"]}
        ],
        "triggers": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_bitrix24.triggers.session_history"]}
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_bitrix24.hooks.bitrix24.Bitrix24Hook",
                "connection-type": "bitrix24",
                "hook-name": "Bitrix24",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }


#: Standard fields of the connection form: what they mean for a Bitrix24 connection.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {"host": "Portal or webhook URL", "login": "Webhook user ID", "password": "Webhook code"},
    "placeholders": {
        "host": "https://your-portal.bitrix24.com/rest/1/your-webhook-code/",
        "login": "1 (only when host is the portal URL)",
        "password": "webhook code (only when host is the portal URL)",
        "extra": '{"rate_limit": "standard", "timeout": 75}',
    },
}

#: Extra fields of the connection form; values land in ``Connection.extra`` under these names.
CONN_FIELDS: dict[str, Any] = {
    "auth_type": {
        "label": "Auth type",
        "description": "'webhook' (inbound webhook, the default) or 'oauth' (OAuth application).",
        "schema": {"type": ["string", "null"], "enum": ["webhook", "oauth", None], "default": "webhook"},
    },
    "client_id": {
        "label": "OAuth client ID",
        "description": "Application client_id (auth type 'oauth').",
        "schema": {"type": ["string", "null"]},
    },
    "client_secret": {
        "label": "OAuth client secret",
        "description": "Application client_secret (auth type 'oauth').",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "refresh_token": {
        "label": "OAuth refresh token",
        "description": "Initial refresh token; rotated tokens are kept in the Variable bitrix24_oauth__<conn_id>.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "access_token": {
        "label": "OAuth access token",
        "description": "Optional initial access token.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "oauth_url": {
        "label": "OAuth token endpoint",
        "description": "Defaults to https://oauth.bitrix.info/oauth/token/.",
        "schema": {"type": ["string", "null"]},
    },
    "rate_limit": {
        "label": "Rate limit",
        "description": (
            "'standard' (burst 50, 2 req/s), 'enterprise' (250, 5 req/s) or {\"burst\": N, \"per_second\": R}."
        ),
        "schema": {"type": ["string", "null"], "default": "standard"},
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Seconds to wait for the portal's answer (default 75; the portal cuts requests at 60).",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of transient failures within one call (default 5).",
        "schema": {"type": ["integer", "null"], "minimum": 0},
    },
    "verify": {
        "label": "TLS verification",
        "description": "true, false, or the path of a CA bundle.",
        "schema": {"type": ["string", "boolean", "null"]},
    },
}
