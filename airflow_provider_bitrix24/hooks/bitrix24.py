"""Airflow hook for the Bitrix24 REST API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client import AsyncBitrix24Client, BatchItem, Bitrix24Client, PortalConfig
    from airflow_provider_bitrix24.client.core import Command
    from airflow_provider_bitrix24.client.limits import Limiter
    from airflow_provider_bitrix24.client.oauth import TokenPair
    from airflow_provider_bitrix24.client.pipeline import Progress

#: Airflow Variables holding the rotated OAuth token pair of a chain: ``bitrix24_oauth_token__<chain id>``. The word
#: "token" in the key makes Airflow mask the value in its UI, API and CLI.
TOKEN_VARIABLE_PREFIX = "bitrix24_oauth_token__"
#: Where version 0.1 kept the pair: ``bitrix24_oauth__<conn_id>``.
LEGACY_VARIABLE_PREFIX = "bitrix24_oauth__"


def _mask(secret: str) -> None:
    try:
        from airflow.providers.common.compat.sdk import mask_secret
    except ImportError:  # common-compat < 1.22 (the newest one Python 3.10 can install)
        try:
            from airflow.sdk.log import mask_secret  # Airflow 3
        except ImportError:
            from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]  # Airflow 2

    mask_secret(secret)


async def _amask(secret: str) -> None:
    """Mask without a sync round trip to the supervisor from an event loop (Airflow 3's ``amask_secret``)."""
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow 2: masking is local, no I/O
        _mask(secret)
        return
    await amask_secret(secret)


def _supervisor_comms() -> Any:
    """Airflow 3's channel to the supervisor when this process has an async one (the triggerer), else ``None``."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:
        return None
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return comms if comms is not None and hasattr(comms, "asend") else None


class VariableTokenStore:
    """
    Keep the rotated OAuth tokens of a chain in the Airflow Variable ``bitrix24_oauth_token__<chain id>`` (JSON).

    Bitrix24 invalidates a refresh token as soon as it is used, so the new pair must be stored where every other
    process looks first; the Connection's extras only hold the pair the chain started from. The key depends on
    the portal, the application and that first refresh token, not on the connection id, so testing a connection
    (Airflow does it under a random id) finds and updates the same chain as the tasks. Inside a task the Task
    SDK's ``Variable`` is used, in a triggerer its async channel, elsewhere (``airflow connections test``, scripts)
    the metadata database's model.

    :param chain: The chain's id (:func:`~airflow_provider_bitrix24.client.oauth.chain_id`).
    :param conn_id: The connection, named in errors; ``bitrix24_oauth__<conn_id>`` (where earlier versions kept the
        pair) is tried when the chain's own refresh token is refused.
    """

    def __init__(self, chain: str, log: Any, conn_id: str | None = None) -> None:
        self.key = f"{TOKEN_VARIABLE_PREFIX}{chain}"
        self.legacy_key = f"{LEGACY_VARIABLE_PREFIX}{conn_id}" if conn_id else None
        self.log = log
        self._where = f"Variable {self.key}" + (f" (the token chain of connection {conn_id})" if conn_id else "")

    def __repr__(self) -> str:
        return f"VariableTokenStore({self.key!r})"

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

    def _parse(self, key: str, raw: Any) -> TokenPair | None:
        from airflow_provider_bitrix24.client.oauth import TokenPair

        pair = TokenPair.from_json(raw) if isinstance(raw, str) else None
        if pair is None:
            self.log.warning("Variable %s does not hold a Bitrix24 token pair; ignoring it", key)
        return pair

    def _load(self, key: str) -> TokenPair | None:
        for variable in self._variable_classes():
            try:
                raw = variable.get(key)
            except Exception:  # missing, or not reachable from this kind of process: try the next way
                continue
            return self._parse(key, raw)
        return None

    def load(self) -> TokenPair | None:
        return self._load(self.key)

    def load_previous(self) -> TokenPair | None:
        """The pair earlier versions kept per connection; tried only when the chain's own refresh is refused."""
        return self._load(self.legacy_key) if self.legacy_key else None

    def save(self, pair: TokenPair) -> None:
        from airflow_provider_bitrix24.client.oauth import token_store_error

        failure: Exception | None = None
        for variable in self._variable_classes():
            try:
                variable.set(self.key, pair.to_json(), description=_DESCRIPTION)
                self.log.info("Stored the rotated Bitrix24 OAuth tokens in Variable %s", self.key)
                return
            except Exception as exc:
                failure = exc
        raise token_store_error(self._where, failure)

    async def _aload(self, key: str) -> TokenPair | None:
        comms = _supervisor_comms()
        if comms is None:
            return await asyncio.to_thread(self._load, key)
        from airflow.sdk.execution_time.comms import GetVariable, VariableResult

        answer = await comms.asend(GetVariable(key=key))
        if isinstance(answer, VariableResult) and answer.value is not None:
            return self._parse(key, answer.value)
        return None

    async def aload(self) -> TokenPair | None:
        return await self._aload(self.key)

    async def aload_previous(self) -> TokenPair | None:
        return await self._aload(self.legacy_key) if self.legacy_key else None

    async def asave(self, pair: TokenPair) -> None:
        comms = _supervisor_comms()
        if comms is None:
            await asyncio.to_thread(self.save, pair)
            return
        from airflow.sdk.execution_time.comms import ErrorResponse, PutVariable

        from airflow_provider_bitrix24.client.oauth import token_store_error

        try:
            answer = await comms.asend(PutVariable(key=self.key, value=pair.to_json(), description=_DESCRIPTION))
        except Exception as exc:
            raise token_store_error(self._where, exc) from None
        if isinstance(answer, ErrorResponse):
            raise token_store_error(self._where, RuntimeError(str(answer.error)))
        self.log.info("Stored the rotated Bitrix24 OAuth tokens in Variable %s", self.key)


_DESCRIPTION = "Rotated Bitrix24 OAuth tokens (kept by the Bitrix24 provider; refresh tokens work once)"


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

    def _client_kwargs(self, config: PortalConfig, *, asynchronous: bool = False) -> dict[str, Any]:
        from airflow_provider_bitrix24.client import OAuthCredentials
        from airflow_provider_bitrix24.client.oauth import chain_id

        store = None
        if isinstance(config.auth, OAuthCredentials):
            store = VariableTokenStore(chain_id(config.portal_key, config.auth), self.log, self.bitrix24_conn_id)
        masker: Callable[[str], Any] = _amask if asynchronous else _mask
        return {"token_store": store, "on_new_secret": masker, "retry_policy": self.retry_policy, "logger": self.log}

    @staticmethod
    def _redis_conn_id(conn: Any) -> str | None:
        """The ``redis_conn_id`` extra: the Airflow Redis connection through which processes share the limits."""
        from airflow_provider_bitrix24.client.config import _extra_get, field_label
        from airflow_provider_bitrix24.client.errors import Bitrix24ConfigError

        extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
        value = _extra_get(extra, "redis_conn_id")
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise Bitrix24ConfigError(
                "extra.redis_conn_id",
                "must be the id of an Airflow Redis connection",
                label=field_label("extra.redis_conn_id"),
            )
        return value.strip()

    @cached_property
    def _connection(self) -> Any:
        return self.get_connection(self.bitrix24_conn_id)

    @cached_property
    def config(self) -> PortalConfig:
        return self.config_from_connection(self._connection)

    @staticmethod
    def _limiter(config: PortalConfig, redis_conn_id: str | None, redis_conn: Any) -> Limiter | None:
        """The limiter shared through the Redis connection, or ``None`` (this process's own)."""
        if redis_conn_id is None:
            return None
        from airflow_provider_bitrix24.hooks._redis import redis_limiter

        return redis_limiter(config, redis_conn, redis_conn_id)

    @cached_property
    def client(self) -> Bitrix24Client:
        """The synchronous client, built on first use."""
        from airflow_provider_bitrix24.client import Bitrix24Client

        config = self.config
        for secret in config.auth.secrets:
            _mask(secret)
        redis_conn_id = self._redis_conn_id(self._connection)
        redis_conn = self.get_connection(redis_conn_id) if redis_conn_id is not None else None
        limiter = self._limiter(config, redis_conn_id, redis_conn)
        return Bitrix24Client(config, limiter=limiter, **self._client_kwargs(config))

    def get_conn(self) -> Bitrix24Client:
        return self.client

    async def get_async_client(self) -> AsyncBitrix24Client:
        """A new asynchronous client for use in triggers; close it with ``await client.aclose()``."""
        from airflow.providers.common.compat.connection import get_async_connection

        from airflow_provider_bitrix24.client import AsyncBitrix24Client

        conn = await get_async_connection(conn_id=self.bitrix24_conn_id, hook=self)
        config = self.config_from_connection(conn)
        for secret in config.auth.secrets:
            await _amask(secret)
        redis_conn_id = self._redis_conn_id(conn)
        redis_conn = await get_async_connection(conn_id=redis_conn_id, hook=self) if redis_conn_id is not None else None
        limiter = self._limiter(config, redis_conn_id, redis_conn)
        return AsyncBitrix24Client(config, limiter=limiter, **self._client_kwargs(config, asynchronous=True))

    # -- calls

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """
        Call a REST method and return its ``result``.

        :param method: The REST method, e.g. ``imopenlines.session.history.get``.
        :param params: The method's parameters.
        """
        return self.client.call(method, params)

    def call_batch(
        self,
        commands: Sequence[Command] | Mapping[str, Command],
        *,
        halt: bool = False,
        stop_codes: frozenset[str] = frozenset(),
        on_progress: Callable[[Progress], None] | None = None,
        spread: bool = False,
    ) -> list[BatchItem]:
        """
        Run many ``(method, params)`` commands through ``batch``: 50 per request, and as many requests in flight as
        the portal's limits allow.

        :param commands: A list of ``(method, params)``, or a mapping of your own keys to them; keys reach the
            portal unchanged, so ``$result[key][...]`` references work between commands of one request (50).
        :param halt: Stop at the first failing command (requests then go one at a time).
        :param stop_codes: Error codes after which no new request is sent; commands not sent carry
            ``NOT_EXECUTED``.
        :param on_progress: Called after each finished request with the counts so far.
        :param spread: Spread independent commands over as many requests as the portal lets go at once (at least
            10 commands each) instead of 50 per request: a real portal processes a request's commands one after
            another, so 1,000 saves finish in the time of 20 commands rather than 50. Ignored when a command refers
            to another one's outcome.
        :return: One :class:`~airflow_provider_bitrix24.client.BatchItem` per command, in input order; a failed
            command carries its error and never hides the others' results.
        """
        return self.client.batch(commands, halt=halt, stop_codes=stop_codes, on_progress=on_progress, spread=spread)

    def list_all(self, method: str, params: Mapping[str, Any] | None = None, limit: int | None = None) -> list[Any]:
        """Every row of a list method, following ``next`` (rows wrapped as ``{"tasks": [...]}`` are unwrapped)."""
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

    def iter_list(self, method: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Iterator[Any]:
        """Stream every row of a list method in keyset mode (``start=-1``, by id): see ``client.listing``."""
        return self.client.iter_list(method, params, **kwargs)
