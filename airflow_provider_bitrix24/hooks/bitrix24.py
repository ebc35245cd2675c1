"""Airflow hook for the Bitrix24 REST API."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_bitrix24.hooks.token_store import (
    LEGACY_VARIABLE_PREFIX,
    TOKEN_VARIABLE_PREFIX,
    VariableTokenStore,
)
from airflow_provider_bitrix24.version_compat import amask_secret as _amask
from airflow_provider_bitrix24.version_compat import mask_secret as _mask
from airflow_provider_bitrix24.version_compat import supervisor_comms as _supervisor_comms

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client import AsyncBitrix24Client, BatchItem, Bitrix24Client, PortalConfig
    from airflow_provider_bitrix24.client.limits import Limiter
    from airflow_provider_bitrix24.client.pipeline import BatchOptions, Progress
    from airflow_provider_bitrix24.client.wire import Command

__all__ = [
    "LEGACY_VARIABLE_PREFIX",
    "TOKEN_VARIABLE_PREFIX",
    "Bitrix24Hook",
    "VariableTokenStore",
    "_amask",
    "_mask",
    "_supervisor_comms",
]


#: How to get the Redis client that ``redis_conn_id`` needs.
REDIS_INSTALL_HINT = "pip install 'airflow-provider-bitrix24[redis]'"


def _require_redis() -> None:
    """Fail with a configuration error naming ``redis_conn_id`` and the extra to install when Redis is missing."""
    from airflow_provider_bitrix24.client.config import field_label
    from airflow_provider_bitrix24.client.errors import Bitrix24ConfigError

    try:
        import redis
        import redis.asyncio  # noqa: F401
    except ImportError:
        raise Bitrix24ConfigError(
            "extra.redis_conn_id",
            f"is set, but the Redis client is not installed; install the provider's redis extra ({REDIS_INSTALL_HINT})"
            " or clear the field to keep the limits per process",
            label=field_label("extra.redis_conn_id"),
        ) from None


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
    :param airflow_errors: Raise what the provider's operators raise instead of the client's errors, for use in
        ``@task`` functions: ``AirflowFailException`` for permanent errors (no Airflow retries on a revoked
        webhook), ``AirflowException`` for transient ones that outlasted the client's retries (see
        :func:`~airflow_provider_bitrix24.failures.airflow_errors`). Errors of single commands of ``call_batch``
        stay in their items. Off by default.
    """

    conn_name_attr = "bitrix24_conn_id"
    default_conn_name = "bitrix24_default"
    conn_type = "bitrix24"
    hook_name = "Bitrix24"

    def __init__(
        self,
        *,
        bitrix24_conn_id: str = default_conn_name,
        retry_policy: Any = None,
        airflow_errors: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bitrix24_conn_id = bitrix24_conn_id
        self.retry_policy = retry_policy
        self.airflow_errors = airflow_errors

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        """Where calls run: turning client errors into Airflow's with ``airflow_errors``, else as they are."""
        if not self.airflow_errors:
            return contextlib.nullcontext()
        from airflow_provider_bitrix24.failures import airflow_errors

        return airflow_errors()

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
        from airflow_provider_bitrix24.client.config import extra_get, field_label
        from airflow_provider_bitrix24.client.errors import Bitrix24ConfigError

        extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
        value = extra_get(extra, "redis_conn_id")
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise Bitrix24ConfigError(
                "extra.redis_conn_id",
                "must be the id of an Airflow Redis connection",
                label=field_label("extra.redis_conn_id"),
            )
        _require_redis()
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
        with self._errors():
            return self.client.call(method, params)

    def call_batch(
        self,
        commands: Sequence[Command] | Mapping[str, Command],
        *,
        options: BatchOptions | None = None,
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
        :param options: A :class:`~airflow_provider_bitrix24.client.BatchOptions` holding all of the options below
            and ``max_burst_share`` (the share of the portal bucket's burst the run may have in flight at once);
            the keyword arguments are laid over it.
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
        :raises Bitrix24BatchError: when a whole request failed (after the client's retries), so the run ended
            early. It is also an instance of that request's error class (``except Bitrix24AuthError`` still
            works), and carries every command's outcome: ``err.done``, ``err.failed``, ``err.unknown`` (sent, no
            readable answer: the portal may have run them) and ``err.not_sent`` list the keys, ``err.items`` holds
            one ``BatchItem`` per command. Before retrying commands that are not idempotent (``crm.lead.add``),
            send only ``err.not_sent`` and ``err.failed``, and check the ``err.unknown`` ones on the portal.
        """
        with self._errors():
            from airflow_provider_bitrix24.client.pipeline import batch_options

            chosen = batch_options(options, halt=halt, stop_codes=stop_codes, on_progress=on_progress, spread=spread)
            return self.client.batch(commands, options=chosen)

    def list_all(self, method: str, params: Mapping[str, Any] | None = None, limit: int | None = None) -> list[Any]:
        """Every row of a list method, following ``next`` (rows wrapped as ``{"tasks": [...]}`` are unwrapped)."""
        with self._errors():
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
        from airflow_provider_bitrix24.hooks.connection_form import ui_field_behaviour

        return ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from airflow_provider_bitrix24.hooks.connection_form import form_widgets

        return form_widgets()

    def iter_list(self, method: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Iterator[Any]:
        """Stream every row of a list method in keyset mode (``start=-1``, by id): see ``client.listing``."""
        return self.client.iter_list(method, params, **kwargs)
