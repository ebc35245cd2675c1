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
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_bitrix24.operators.quick_answer"]},
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_bitrix24.operators.bitrix24"]},
        ],
        "sensors": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_bitrix24.sensors.session_history"]}
        ],
        "triggers": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_bitrix24.triggers.session_history"]},
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_bitrix24.triggers.messages"]},
        ],
        "notifications": ["airflow_provider_bitrix24.notifications.bitrix24.Bitrix24Notifier"],
        # MessageQueueTrigger(scheme="bitrix24", ...) with the extra [messaging] (common-messaging, Airflow 3).
        "queues": ["airflow_provider_bitrix24.queues.bitrix24.Bitrix24MessageQueueProvider"],
        "transfers": [
            {
                "source-integration-name": INTEGRATION,
                "target-integration-name": "Common IO",
                "python-module": "airflow_provider_bitrix24.transfers.session_history",
            }
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


#: Standard fields of the connection form: what they mean for a Bitrix24 connection. The labels are the ones
#: configuration errors name (``airflow_provider_bitrix24.client.config.FIELD_LABELS``). The placeholders lead to
#: the split webhook form: Airflow masks the password field, but shows the host in clear in its connections list
#: and in this form, so a full webhook URL in host would show its code to everyone who can see connections.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {"host": "Portal or webhook URL", "login": "Webhook user ID", "password": "Webhook code"},
    "placeholders": {
        "host": "https://your-portal.bitrix24.com; code in Webhook code (password)",
        "login": "1: the number after /rest/ in the webhook URL",
        "password": "the code after /rest/<user ID>/ in the webhook URL; masked",
        "extra": '{"rate_limit": "standard", "timeout": 75}',
    },
}

#: Extra fields of the connection form; values land in ``Connection.extra`` under these names.
CONN_FIELDS: dict[str, Any] = {
    "auth_type": {
        "label": "Auth type",
        "description": (
            "webhook (inbound webhook, the default) or oauth (OAuth application). Webhook: the portal URL in "
            "Portal or webhook URL (host), the user ID in Webhook user ID (login) and the code in Webhook code "
            "(password), which Airflow masks. A full webhook URL in Portal or webhook URL (host) works too, but "
            "Airflow then shows it, code included, in clear in the connections list and in this form. OAuth: "
            "the portal URL in host and the OAuth fields below."
        ),
        # No null in the enum: Airflow 3's form would offer it as a literal "null" option. (Airflow 2's form has
        # no selector for provider fields: a text field, where webhook or oauth is typed.)
        "schema": {
            "type": "string",
            "enum": ["webhook", "oauth"],
            "default": "webhook",
            "values_display": {"webhook": "Inbound webhook", "oauth": "OAuth application"},
        },
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
        "description": "Initial refresh token; the hook keeps the rotated tokens in an Airflow Variable.",
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
            "standard (burst 50, then 2 requests/s), enterprise (burst 250, then 5 requests/s), or a JSON object "
            '{"burst": N, "per_second": R}.'
        ),
        # A preset name or an object: the form shows a stored object as JSON (a plain string field would show
        # "[object Object]") and sends what is typed as a string or, when it is a JSON object, as that object.
        "schema": {"type": ["string", "object", "null"], "default": "standard"},
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
    "redis_conn_id": {
        "label": "Redis connection ID (shared limits)",
        "description": (
            "Optional: the id of an Airflow Redis connection. Every worker, machine and triggerer using this "
            "connection then shares the portal's rate limit, blocked methods and the OAuth refresh through it. "
            "Set it when several processes call the same portal at once; empty keeps the limits per process."
        ),
        "schema": {"type": ["string", "null"]},
    },
}
