"""Airflow hook for the Bitrix24 REST API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client import AsyncBitrix24Client, BatchItem, Bitrix24Client, PortalConfig
    from airflow_provider_bitrix24.client.core import Command
    from airflow_provider_bitrix24.client.oauth import TokenPair

#: Airflow Variable holding the rotated OAuth token pair of a connection: ``bitrix24_oauth__<conn_id>``.
TOKEN_VARIABLE_PREFIX = "bitrix24_oauth__"


def _mask(secret: str) -> None:
    try:
        from airflow.providers.common.compat.sdk import mask_secret
    except ImportError:  # common-compat < 1.22 (the newest one Python 3.10 can install)
        try:
            from airflow.sdk.log import mask_secret  # Airflow 3
        except ImportError:
            from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]  # Airflow 2

    mask_secret(secret)


class VariableTokenStore:
    """
    Keep rotated OAuth tokens in the Airflow Variable ``bitrix24_oauth__<conn_id>`` (JSON).

    Bitrix24 invalidates a refresh token as soon as it is used, so the new pair must be stored where the next
    task process looks first; the Connection's extras only hold the initial pair. Inside a task the Task SDK's
    ``Variable`` is used; elsewhere (``airflow connections test``, scripts) the metadata database's model is.
    """

    def __init__(self, conn_id: str, log: Any) -> None:
        self.key = f"{TOKEN_VARIABLE_PREFIX}{conn_id}"
        self.log = log

    @staticmethod
    def _variable_classes() -> list[Any]:
        from airflow.providers.common.compat.sdk import Variable

        classes: list[Any] = [Variable]
        try:
            from airflow.models.variable import Variable as VariableModel
        except ImportError:  # pragma: no cover - every supported Airflow has it
            return classes
        if VariableModel is not Variable:
            classes.append(VariableModel)
        return classes

    def load(self) -> TokenPair | None:
        from airflow_provider_bitrix24.client.oauth import TokenPair

        for variable in self._variable_classes():
            try:
                raw = variable.get(self.key)
            except Exception:  # missing, or not reachable from this kind of process: try the next way
                continue
            pair = TokenPair.from_json(raw) if isinstance(raw, str) else None
            if pair is None:
                self.log.warning("Variable %s does not hold a Bitrix24 token pair; ignoring it", self.key)
            return pair
        return None

    def save(self, pair: TokenPair) -> None:
        failure = ""
        for variable in self._variable_classes():
            try:
                variable.set(self.key, pair.to_json(), description="Rotated Bitrix24 OAuth tokens (kept by the hook)")
                return
            except Exception as exc:
                failure = type(exc).__name__
        self.log.warning(
            "Could not store the rotated Bitrix24 tokens in Variable %s (%s); the next process will need a new "
            "refresh token in the connection",
            self.key,
            failure,
        )


class Bitrix24Hook(BaseHook):
    """
    Call the Bitrix24 REST API using an Airflow Connection.

    The connection holds either an inbound webhook (its URL in ``host``, or the portal URL in ``host``, the user
    id in ``login`` and the webhook code in ``password``) or an OAuth application (``auth_type: oauth`` in extra).
    Calls are paced to the portal's rate limit, transient failures are retried, OAuth tokens refresh and rotate
    by themselves, and no secret is ever written to a log or an error message.

    .. seealso::
        https://apidocs.bitrix24.com/settings/how-to-call-rest-api/index.html

    :param bitrix24_conn_id: The Airflow connection to use.
    :param retry_policy: How transient failures are retried within one call. Optional.
    """

    conn_name_attr = "bitrix24_conn_id"
    default_conn_name = "bitrix24_default"
    conn_type = "bitrix24"
    hook_name = "Bitrix24"

    def __init__(self, *, bitrix24_conn_id: str = default_conn_name, retry_policy: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bitrix24_conn_id = bitrix24_conn_id
        self.retry_policy = retry_policy

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bitrix24_conn_id={self.bitrix24_conn_id!r})"

    # -- connection

    @staticmethod
    def config_from_connection(conn: Any) -> PortalConfig:
        """Turn an Airflow Connection into portal settings; raises ``Bitrix24ConfigError`` naming the field."""
        from airflow_provider_bitrix24.client.config import parse_connection

        host = conn.host or ""
        # A URI connection (bitrix24://portal/rest/1/code) puts the path in ``schema``.
        if conn.schema and "/" not in host.split("://", 1)[-1]:
            host = f"{host.rstrip('/')}/{conn.schema.lstrip('/')}"
        return parse_connection(
            host=host, login=conn.login, password=conn.password, port=conn.port, extra=conn.extra_dejson
        )

    def _client_kwargs(self, config: PortalConfig) -> dict[str, Any]:
        from airflow_provider_bitrix24.client import OAuthCredentials

        store = (
            VariableTokenStore(self.bitrix24_conn_id, self.log) if isinstance(config.auth, OAuthCredentials) else None
        )
        return {"token_store": store, "on_new_secret": _mask, "retry_policy": self.retry_policy, "logger": self.log}

    @cached_property
    def config(self) -> PortalConfig:
        return self.config_from_connection(self.get_connection(self.bitrix24_conn_id))

    @cached_property
    def client(self) -> Bitrix24Client:
        """The synchronous client, built on first use."""
        from airflow_provider_bitrix24.client import Bitrix24Client

        return Bitrix24Client(self.config, **self._client_kwargs(self.config))

    def get_conn(self) -> Bitrix24Client:
        return self.client

    async def get_async_client(self) -> AsyncBitrix24Client:
        """A new asynchronous client for use in triggers; close it with ``await client.aclose()``."""
        from airflow.providers.common.compat.connection import get_async_connection

        from airflow_provider_bitrix24.client import AsyncBitrix24Client

        conn = await get_async_connection(conn_id=self.bitrix24_conn_id, hook=self)
        config = self.config_from_connection(conn)
        return AsyncBitrix24Client(config, **self._client_kwargs(config))

    # -- calls

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """
        Call a REST method and return its ``result``.

        :param method: The REST method, e.g. ``imopenlines.session.history.get``.
        :param params: The method's parameters.
        """
        return self.client.call(method, params)

    def call_batch(self, commands: Sequence[Command] | Mapping[str, Command], *, halt: bool = False) -> list[BatchItem]:
        """
        Run many ``(method, params)`` commands through ``batch``, 50 per request.

        :return: One :class:`~airflow_provider_bitrix24.client.BatchItem` per command, in input order; a failed
            command carries its error and never hides the others' results.
        """
        return self.client.batch(commands, halt=halt)

    def list_all(self, method: str, params: Mapping[str, Any] | None = None, limit: int | None = None) -> list[Any]:
        """Every item of a list method, following ``next``."""
        return self.client.list_all(method, params, limit)

    def test_connection(self) -> tuple[bool, str]:
        """Check the credential with ``profile`` and ``scope`` in one batch, and that ``imopenlines`` is granted."""
        try:
            profile, scope = self.call_batch([("profile", None), ("scope", None)])
            for item in (profile, scope):
                if item.error is not None:
                    raise item.error
            user = profile.result if isinstance(profile.result, Mapping) else {}
            scopes = [str(s) for s in scope.result] if isinstance(scope.result, list) else []
            who = f"user {user.get('ID', '?')}"
            name = " ".join(str(user.get(k, "")).strip() for k in ("NAME", "LAST_NAME")).strip()
            if name:
                who += f" ({name})"
            if "imopenlines" not in scopes:
                return (
                    False,
                    f"Connected to {self.config.base_url} as {who}, but the credential lacks the 'imopenlines' scope "
                    f"(granted: {', '.join(scopes) or 'none'}). Add it to the webhook or application permissions.",
                )
            return True, f"Connected to {self.config.base_url} as {who}; scopes: {', '.join(scopes)}"
        except Exception as exc:
            return False, str(exc)

    # -- connection form (Airflow 2.x; Airflow 3 reads the form from the provider info)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_bitrix24.get_provider_info import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
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
