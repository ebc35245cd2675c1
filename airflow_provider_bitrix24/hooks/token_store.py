"""
Where the rotated OAuth pair is stored: the Airflow Variable of its token chain.

The client keeps the pair in memory and asks a :class:`~airflow_provider_bitrix24.client.oauth.TokenStore` to load
and save it; this is the store of Airflow deployments, for sync callers (tasks, ``airflow connections test``) and
async ones (the triggerer) alike. The refresh itself is serialised by the client's drivers: a thread lock and an
``asyncio.Lock`` per chain in each process, and the limiter's ``refresh_lock`` across processes (a Redis lock when
the connection names a Redis connection, see :mod:`airflow_provider_bitrix24.client.limits_redis`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow_provider_bitrix24.version_compat import supervisor_comms

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.oauth import TokenPair

#: Airflow Variables holding the rotated OAuth token pair of a chain: ``bitrix24_oauth_token__<chain id>``. The word
#: "token" in the key makes Airflow mask the value in its UI, API and CLI.
TOKEN_VARIABLE_PREFIX = "bitrix24_oauth_token__"
#: Where version 0.1 kept the pair: ``bitrix24_oauth__<conn_id>``.
LEGACY_VARIABLE_PREFIX = "bitrix24_oauth__"


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
        from airflow_provider_bitrix24.version_compat import variable_classes

        return variable_classes()

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
        comms = supervisor_comms()
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
        comms = supervisor_comms()
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
