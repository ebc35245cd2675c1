"""The asynchronous client: the core's flows performed over an ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from airflow_provider_bitrix24.client.config import PortalConfig
from airflow_provider_bitrix24.client.core import (
    USER_AGENT,
    BatchItem,
    Command,
    Engine,
    Flow,
    HttpRequest,
    HttpResponse,
    Refresh,
    Send,
    Sleep,
)
from airflow_provider_bitrix24.client.errors import (
    Bitrix24Error,
    Bitrix24ResponseError,
    Bitrix24TransportError,
)


class AsyncBitrix24Client:
    """
    Call the Bitrix24 REST API from asyncio code (triggers).

    Shares the rate-limit bucket and OAuth tokens with every other client of the same portal in the process.
    Use it as ``async with AsyncBitrix24Client(config) as client: ...`` or call :meth:`aclose`.

    :param config: The portal settings.
    :param sleep: How to wait; tests inject a fake.
    :param kwargs: Passed to :class:`~airflow_provider_bitrix24.client.core.Engine`.
    """

    def __init__(
        self,
        config: PortalConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **kwargs: Any,
    ) -> None:
        self.engine = Engine(config, **kwargs)
        self.config = config
        self.sleep = sleep
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"AsyncBitrix24Client({self.engine.base_url!r}, auth={self.config.auth!r})"

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            timeout = self.config.timeout
            self._http = httpx.AsyncClient(
                verify=self.config.verify,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        return self._http

    async def __aenter__(self) -> AsyncBitrix24Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _send(self, request: HttpRequest) -> HttpResponse:
        limit = self.config.max_body_bytes
        failure: Bitrix24Error | None = None
        try:
            async with self.http.stream(request.method, request.url, json=request.json) as response:
                buffer = bytearray()
                async for chunk in response.aiter_bytes():
                    buffer += chunk
                    if len(buffer) > limit:
                        failure = Bitrix24ResponseError(
                            "RESPONSE_TOO_LARGE",
                            f"the answer exceeds {limit} bytes",
                            status=response.status_code,
                            method=request.rest_method,
                        )
                        break
                if failure is None:
                    return HttpResponse(
                        response.status_code,
                        bytes(buffer),
                        {k.lower(): v for k, v in response.headers.items()},
                    )
        except httpx.TimeoutException:
            failure = Bitrix24TransportError(
                "TIMEOUT", f"no answer within {self.config.timeout:g} s", method=request.rest_method
            )
        except httpx.HTTPError as exc:
            failure = Bitrix24TransportError(
                "CONNECTION_FAILED",
                f"the connection failed or was dropped before an answer ({type(exc).__name__})",
                method=request.rest_method,
            )
        # Raised here, outside the except blocks, so that httpx's exception (its text holds the URL) is not
        # attached as context.
        assert failure is not None
        raise failure

    async def _refresh(self, failed_token: str | None) -> None:
        # The refresh is rare and serialised by a thread lock shared with sync clients, so it runs in a thread
        # over a short-lived sync transport rather than blocking the event loop.
        from airflow_provider_bitrix24.client.sync import SyncTransport

        oauth = self.engine.oauth
        assert oauth is not None
        transport = SyncTransport(self.config)
        try:
            await asyncio.to_thread(oauth.refresh, failed_token, transport.token_fetch)
        finally:
            transport.close()

    async def run(self, flow: Flow) -> Any:
        """Drive a core flow to its end, performing each action it yields."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                if isinstance(action, Send):
                    value = await self._send(action.request)
                elif isinstance(action, Sleep):
                    await self.sleep(action.seconds)
                elif isinstance(action, Refresh):
                    await self._refresh(action.failed_token)
            except Bitrix24Error as exc:
                error = exc

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call ``method`` and return its ``result``."""
        return (await self.run(self.engine.call_flow(method, params))).result

    async def batch(
        self, commands: Sequence[Command] | Mapping[str, Command], *, halt: bool = False
    ) -> list[BatchItem]:
        """Run commands through ``batch`` (any number, 50 per request); one :class:`BatchItem` per command."""
        result: list[BatchItem] = await self.run(self.engine.batch_flow(commands, halt=halt))
        return result

    async def list_all(
        self, method: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[Any]:
        """Every item of a list method, following ``next``."""
        items: list[Any] = await self.run(self.engine.list_flow(method, params, limit))
        return items
