"""
The asynchronous client: the core's flows performed over an ``httpx.AsyncClient`` and asyncio tasks.

Built for a triggerer, whose one event loop runs every deferred task of a deployment: nothing here blocks the
loop. No thread lock is ever taken on it (the OAuth refresh is serialised by an ``asyncio.Lock``), the token store
and the masker are called through their async APIs, ``timeout`` bounds each whole answer, and large bodies are
decoded in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any, Final

import httpx

from airflow_provider_bitrix24.client.config import PortalConfig
from airflow_provider_bitrix24.client.core import (
    USER_AGENT,
    Acquire,
    BatchItem,
    Command,
    Engine,
    Flow,
    HttpRequest,
    HttpResponse,
    Refresh,
    Report,
    Send,
    Sleep,
    SyncTokens,
    decode_json,
)
from airflow_provider_bitrix24.client.errors import Bitrix24Error, Bitrix24TokenStoreError
from airflow_provider_bitrix24.client.errors import hint as error_hint
from airflow_provider_bitrix24.client.oauth import (
    LoadTokens,
    NewSecrets,
    SaveTokens,
    TokenAnswer,
    TokenRequest,
    Wait,
    token_store_error,
)
from airflow_provider_bitrix24.client.pipeline import (
    MAX_IN_FLIGHT,
    BatchOptions,
    BatchRun,
    Job,
    Progress,
    batch_options,
)
from airflow_provider_bitrix24.client.transport import LibraryErrors, answer, map_failure, too_large

#: Bodies larger than this are decoded in a worker thread, off the event loop.
DECODE_OFF_LOOP: Final = 256 * 1024
#: How ``httpx`` reports a failed request (see :mod:`.transport`); ``asyncio.TimeoutError`` is not the builtin
#: ``TimeoutError`` before Python 3.11.
HTTPX_ERRORS: Final = LibraryErrors(timeouts=(asyncio.TimeoutError, httpx.TimeoutException), drops=(httpx.HTTPError,))


class AsyncBitrix24Client:
    """
    Call the Bitrix24 REST API from asyncio code (triggers).

    Shares the rate-limit bucket and OAuth tokens with every other client of the same portal in the process.
    Use it as ``async with AsyncBitrix24Client(config) as client: ...`` or call :meth:`aclose`.

    :param config: The portal settings.
    :param sleep: How to wait; tests inject a fake.
    :param kwargs: Passed to :class:`~airflow_provider_bitrix24.client.core.Engine`; ``on_new_secret`` may be a
        coroutine function (Airflow's ``amask_secret``).
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

    def _build_http(self) -> httpx.AsyncClient:
        """
        Make the ``httpx.AsyncClient``. Called in a worker thread: it reads and parses the CA bundle (for https)
        and imports httpx's transport stack on first use, tens of milliseconds that must not stall the loop.
        """
        import httpcore  # noqa: F401

        # anyio's asyncio backend, which httpcore imports on the first connection otherwise. A private module of
        # anyio: when a release moves it, the first connection imports the backend as before.
        with contextlib.suppress(ImportError):
            importlib.import_module("anyio._backends._asyncio")

        timeout = self.config.timeout
        return httpx.AsyncClient(
            verify=self.config.verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            limits=httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=16),
        )

    async def _client(self) -> httpx.AsyncClient:
        """The HTTP client, built off the event loop on first use and then reused."""
        if self._http is None:
            built = await asyncio.to_thread(self._build_http)
            if self._http is None:
                self._http = built
            else:  # another coroutine built one meanwhile
                await built.aclose()
        return self._http

    async def __aenter__(self) -> AsyncBitrix24Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- transport

    async def _fetch(
        self,
        method: str,
        url: str,
        rest_method: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        timeout = self.config.timeout
        failure: Bitrix24Error | None = None
        try:
            response = await asyncio.wait_for(
                self._exchange(method, url, rest_method, json_body=json_body, params=params), timeout
            )
        except HTTPX_ERRORS.caught as exc:
            failure = map_failure(exc, HTTPX_ERRORS, method=rest_method, timeout=timeout)
        else:
            if len(response.body) > DECODE_OFF_LOOP:
                parsed = await asyncio.to_thread(decode_json, response.body)
                response = HttpResponse(response.status, response.body, response.headers, parsed)
            return response
        # Raised here, outside the except blocks, so that httpx's exception (its text holds the URL) is not
        # attached as context.
        raise failure

    async def _exchange(
        self,
        method: str,
        url: str,
        rest_method: str,
        *,
        json_body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
    ) -> HttpResponse:
        limit = self.config.max_body_bytes
        http = await self._client()
        async with http.stream(method, url, json=json_body, params=params) as response:
            buffer = bytearray()
            async for chunk in response.aiter_bytes():
                buffer += chunk
                if len(buffer) > limit:
                    raise too_large(limit, response.status_code, rest_method)
            return answer(response.status_code, bytes(buffer), response.headers.items())

    async def _send(self, request: HttpRequest) -> HttpResponse:
        return await self._fetch(request.method, request.url, request.rest_method, json_body=request.json)

    # -- driving flows

    async def run(self, flow: Flow) -> Any:
        """Drive a core flow to its end, performing each action it yields."""
        return await _drive(flow, self._perform)

    async def _perform(self, action: Any) -> Any:
        engine = self.engine
        if isinstance(action, Send):
            return await self._send(action.request)
        if isinstance(action, Sleep):
            await self.sleep(action.seconds)
        elif isinstance(action, Acquire):
            return await engine.limiter.aacquire(action.method, action.force)
        elif isinstance(action, Report):
            if action.kind == "rejected":
                await engine.limiter.areport_rejected()
            else:
                await engine.limiter.areport_blocked(action.method, action.until)
        elif isinstance(action, Refresh):
            oauth = engine.oauth
            assert oauth is not None
            # An asyncio lock for this loop's coroutines; the thread lock of sync callers is never taken here.
            async with oauth.loop_lock(), engine.limiter.arefresh_lock(oauth.chain):
                await _drive(oauth.refresh_flow(action.failed_token), self._perform_oauth)
        elif isinstance(action, SyncTokens):
            assert engine.oauth is not None
            await _drive(engine.oauth.sync_flow(), self._perform_oauth)
        else:
            raise TypeError(f"unknown action {action!r}")
        return None

    async def _perform_oauth(self, action: Any) -> Any:
        store = self.engine.token_store
        if isinstance(action, TokenRequest):
            response = await self._fetch("GET", action.url, "oauth/token", params=action.params)
            return TokenAnswer(response.status, response.body)
        if isinstance(action, LoadTokens):
            if store is None:
                return None
            if action.previous:
                previous = getattr(store, "aload_previous", None)
                return await previous() if previous is not None else None
            return await store.aload()
        if isinstance(action, SaveTokens):
            if store is not None:
                try:
                    await store.asave(action.pair)
                except Bitrix24TokenStoreError:
                    raise
                except Exception as exc:
                    raise token_store_error(store.key, exc) from None
        elif isinstance(action, NewSecrets):
            callback = self.engine.on_new_secret
            if callback is not None:
                for secret in action.values:
                    result = callback(secret)
                    if inspect.isawaitable(result):
                        await result
        elif isinstance(action, Wait):
            await self.sleep(action.seconds)
        else:
            raise TypeError(f"unknown action {action!r}")
        return None

    # -- what the portal said

    def time_until_unblocked(self, method: str) -> float | None:
        """
        Seconds until ``method`` may be called again after the portal's operating-time limit blocked it, as every
        client of this credential has learned it; ``None`` when it is not blocked.
        """
        return self.engine.time_until_unblocked(method)

    @staticmethod
    def hint(code: str) -> str | None:
        """What to do about an error code, in one line; ``None`` when there is nothing to fix (a transient one)."""
        return error_hint(code)

    # -- calls

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call ``method`` and return its ``result``."""
        return (await self.run(self.engine.call_flow(method, params))).result

    async def batch(
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
        Run commands through ``batch`` (any number, 50 per request, several requests in flight as the portal
        allows); one :class:`BatchItem` per command, in input order. ``options``,
        ``spread`` and the rest: as :meth:`Bitrix24Client.batch <airflow_provider_bitrix24.client.sync.Bitrix24Client.batch>`.
        """
        opts = batch_options(options, halt=halt, stop_codes=stop_codes, on_progress=on_progress, spread=spread)
        headroom = await self.engine.limiter.aheadroom() if opts.spread else None
        run = BatchRun(self.engine, commands, opts, headroom=headroom)
        tasks: dict[asyncio.Task[tuple[Any, float]], Job] = {}
        try:
            while not run.done:
                while (job := run.next_job()) is not None:
                    tasks[asyncio.ensure_future(self._timed(run.job_flow(job)))] = job
                if not tasks:
                    await self.sleep(run.wake_in() or 0.0)
                    continue
                finished, _ = await asyncio.wait(tasks, timeout=run.wake_in(), return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    run.finish(tasks.pop(task), *task.result())
        except BaseException as exc:
            run.fatal = run.fatal or exc
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return run.results()

    async def _timed(self, flow: Flow) -> tuple[Any, float]:
        started = time.monotonic()
        try:
            outcome: Any = await self.run(flow)
        except Exception as exc:
            outcome = exc
        return outcome, time.monotonic() - started

    async def list_all(
        self, method: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[Any]:
        """Every row of a list method, following ``next``; ``limit`` counts rows."""
        items: list[Any] = await self.run(self.engine.list_flow(method, params, limit))
        return items

    def iter_list(self, method: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        """Stream every row of a list method in keyset mode (:func:`~airflow_provider_bitrix24.client.listing.aiter_list`)."""
        from airflow_provider_bitrix24.client.listing import aiter_list

        return aiter_list(self, method, params, **kwargs)


async def _drive(flow: Generator[Any, Any, Any], perform: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run a flow to its end: perform each action it yields, send the answer back, throw client errors in."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            action = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = await perform(action)
        except Bitrix24Error as exc:
            error = exc
