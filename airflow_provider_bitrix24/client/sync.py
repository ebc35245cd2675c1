"""The synchronous client: the core's flows performed over a pooled ``requests.Session`` and threads."""

from __future__ import annotations

import contextlib
import heapq
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import requests
from requests.adapters import HTTPAdapter

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

_CHUNK = 64 * 1024
#: How ``requests`` reports a failed request (see :mod:`.transport`).
REQUESTS_ERRORS = LibraryErrors(
    timeouts=(requests.Timeout,),
    drops=(requests.ConnectionError, requests.exceptions.ChunkedEncodingError),
    others=(requests.RequestException,),
)


class SyncTransport:
    """
    Sends :class:`HttpRequest` objects with ``requests``; library errors never escape with their URLs.

    ``timeout`` bounds the whole answer, not each read: a body that trickles in is cut at the deadline.
    """

    def __init__(self, config: PortalConfig) -> None:
        self.config = config
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=MAX_IN_FLIGHT)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        self.session.verify = config.verify

    def send(self, request: HttpRequest) -> HttpResponse:
        return self.fetch(request.method, request.url, request.rest_method, json_body=request.json)

    def fetch(
        self,
        method: str,
        url: str,
        rest_method: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        timeout = self.config.timeout
        deadline = time.monotonic() + timeout
        expired = threading.Event()
        failure: Bitrix24Error | None = None
        try:
            with self.session.request(
                method,
                url,
                json=json_body,
                params=params,
                timeout=(min(timeout, 30.0), timeout),
                allow_redirects=False,
                stream=True,
            ) as response:
                sock = _socket_of(response)
                alarm = _DEADLINES.arm(deadline, lambda: _cut(sock, expired))
                try:
                    body = _read_bounded(response, self.config.max_body_bytes, rest_method, deadline)
                finally:
                    alarm.cancel()
                return answer(response.status_code, body, response.headers.items())
        except REQUESTS_ERRORS.caught as exc:
            failure = map_failure(exc, REQUESTS_ERRORS, method=rest_method, timeout=timeout, expired=expired.is_set())
        # Raised outside the except block so that the library's exception, whose text holds the URL, is not
        # attached as context.
        raise failure

    def close(self) -> None:
        self.session.close()


def _nothing() -> None:
    return None


class _Alarm:
    __slots__ = ("active", "callback", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.active = True

    def __lt__(self, other: _Alarm) -> bool:
        return self.deadline < other.deadline

    def cancel(self) -> None:
        self.active = False
        self.callback = _nothing  # let go of the socket at once; the alarm may wait in the heap a while


class _Deadlines:
    """
    One daemon thread that runs a callback when its deadline passes, for every request of the process: a thread
    per request (``threading.Timer``) would cost a quarter of a local request's time.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[_Alarm] = []
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, callback: Callable[[], None]) -> _Alarm:
        alarm = _Alarm(deadline, callback)
        with self._wake:
            heapq.heappush(self._heap, alarm)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bitrix24-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0] is alarm:
                self._wake.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and not self._heap[0].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                first = self._heap[0]
                remaining = first.deadline - time.monotonic()
                if remaining > 0:
                    self._wake.wait(remaining)
                    continue
                heapq.heappop(self._heap)
            if first.active:
                first.callback()


_DEADLINES = _Deadlines()


def _socket_of(response: requests.Response) -> socket.socket | None:
    connection = getattr(response.raw, "connection", None) or getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _cut(sock: socket.socket | None, expired: threading.Event) -> None:
    """The deadline passed while the body was still coming: end the read by shutting the socket down."""
    expired.set()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _read_bounded(response: requests.Response, limit: int, method: str, deadline: float) -> bytes:
    buffer = bytearray()
    for chunk in response.iter_content(_CHUNK):
        buffer += chunk
        if len(buffer) > limit:
            raise too_large(limit, response.status_code, method)
        if time.monotonic() > deadline:
            raise requests.Timeout()
    return bytes(buffer)


class Bitrix24Client:
    """
    Call the Bitrix24 REST API synchronously.

    :param config: The portal settings, e.g. from :func:`parse_connection`.
    :param kwargs: Passed to :class:`~airflow_provider_bitrix24.client.core.Engine` (``token_store``,
        ``on_new_secret``, ``retry_policy``, ``logger``, ``limiter``).
    :param sleep: How to wait; tests inject a fake.
    """

    def __init__(self, config: PortalConfig, *, sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> None:
        self.engine = Engine(config, **kwargs)
        self.transport = SyncTransport(config)
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"Bitrix24Client({self.engine.base_url!r}, auth={self.engine.config.auth!r})"

    def __enter__(self) -> Bitrix24Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    # -- driving flows

    def run(self, flow: Flow) -> Any:
        """Drive a core flow to its end, performing each action it yields."""
        return _drive(flow, self._perform)

    def _perform(self, action: Any) -> Any:
        engine = self.engine
        if isinstance(action, Send):
            return self.transport.send(action.request)
        if isinstance(action, Sleep):
            self.sleep(action.seconds)
        elif isinstance(action, Acquire):
            return engine.limiter.acquire(action.method, action.force)
        elif isinstance(action, Report):
            if action.kind == "rejected":
                engine.limiter.report_rejected()
            else:
                engine.limiter.report_blocked(action.method, action.until)
        elif isinstance(action, Refresh):
            oauth = engine.oauth
            assert oauth is not None
            with oauth.thread_lock, engine.limiter.refresh_lock(oauth.chain):
                _drive(oauth.refresh_flow(action.failed_token), self._perform_oauth)
        elif isinstance(action, SyncTokens):
            assert engine.oauth is not None
            _drive(engine.oauth.sync_flow(), self._perform_oauth)
        else:
            raise TypeError(f"unknown action {action!r}")
        return None

    def _perform_oauth(self, action: Any) -> Any:
        store = self.engine.token_store
        if isinstance(action, TokenRequest):
            response = self.transport.fetch("GET", action.url, "oauth/token", params=action.params)
            return TokenAnswer(response.status, response.body)
        if isinstance(action, LoadTokens):
            if store is None:
                return None
            if action.previous:
                previous = getattr(store, "load_previous", None)
                return previous() if previous is not None else None
            return store.load()
        if isinstance(action, SaveTokens):
            if store is not None:
                try:
                    store.save(action.pair)
                except Bitrix24TokenStoreError:
                    raise
                except Exception as exc:
                    raise token_store_error(store.key, exc) from None
        elif isinstance(action, NewSecrets):
            if self.engine.on_new_secret is not None:
                for secret in action.values:
                    self.engine.on_new_secret(secret)
        elif isinstance(action, Wait):
            self.sleep(action.seconds)
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

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call ``method`` and return its ``result``."""
        return self.run(self.engine.call_flow(method, params)).result

    def batch(
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
        allows); one :class:`BatchItem` per command, in input order.

        :param options: The run's :class:`~airflow_provider_bitrix24.client.pipeline.BatchOptions` (with
            ``max_burst_share``); the keyword arguments below are laid over it.
        :param halt: Stop at the first failing command.
        :param stop_codes: Error codes after which no new request is sent (unsent commands: ``NOT_EXECUTED``).
        :param on_progress: Called after each finished request.
        :param spread: Spread the commands over the requests the portal lets go at once, rather than 50 per request
            (faster on a real portal, whose processing time grows with each request's commands); ignored when a
            command refers to another one's outcome.
        """
        opts = batch_options(options, halt=halt, stop_codes=stop_codes, on_progress=on_progress, spread=spread)
        headroom = self.engine.limiter.headroom() if opts.spread else None
        run = BatchRun(self.engine, commands, opts, headroom=headroom)
        if run.window.ceiling == 1 or len(run.entries) <= 50:
            self._run_inline(run)
        else:
            self._run_pooled(run)
        return run.results()

    def _timed(self, flow: Flow) -> tuple[Any, float]:
        started = time.monotonic()
        try:
            outcome: Any = self.run(flow)
        except Exception as exc:
            outcome = exc
        return outcome, time.monotonic() - started

    def _run_inline(self, run: BatchRun) -> None:
        while not run.done:
            job = run.next_job()
            if job is None:
                self.sleep(run.wake_in() or 0.0)
                continue
            run.finish(job, *self._timed(run.job_flow(job)))

    def _run_pooled(self, run: BatchRun) -> None:
        pool = ThreadPoolExecutor(max_workers=run.window.ceiling, thread_name_prefix="bitrix24-batch")
        futures: dict[Future[tuple[Any, float]], Job] = {}
        try:
            while not run.done:
                while (job := run.next_job()) is not None:
                    futures[pool.submit(self._timed, run.job_flow(job))] = job
                if not futures:
                    self.sleep(run.wake_in() or 0.0)
                    continue
                finished, _ = wait(futures, timeout=run.wake_in(), return_when=FIRST_COMPLETED)
                for future in finished:
                    run.finish(futures.pop(future), *future.result())
        except BaseException as exc:
            # Interrupted (the task is being killed): requests waiting for a slot send nothing more.
            run.fatal = run.fatal or exc
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def list_all(self, method: str, params: Mapping[str, Any] | None = None, limit: int | None = None) -> list[Any]:
        """Every row of a list method, following ``next``; ``limit`` counts rows."""
        items: list[Any] = self.run(self.engine.list_flow(method, params, limit))
        return items

    def iter_list(self, method: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Iterator[Any]:
        """Stream every row of a list method in keyset mode (:func:`~airflow_provider_bitrix24.client.listing.iter_list`)."""
        from airflow_provider_bitrix24.client.listing import iter_list

        return iter_list(self, method, params, **kwargs)


def _drive(flow: Generator[Any, Any, Any], perform: Callable[[Any], Any]) -> Any:
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
            value = perform(action)
        except Bitrix24Error as exc:
            error = exc
