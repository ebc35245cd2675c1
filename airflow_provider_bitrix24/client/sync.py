"""The synchronous client: the core's flows performed over a pooled ``requests.Session``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests

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
    read_bounded,
)
from airflow_provider_bitrix24.client.errors import Bitrix24Error, Bitrix24TransportError

_CHUNK = 64 * 1024


class SyncTransport:
    """Sends :class:`HttpRequest` objects with ``requests``; library errors never escape with their URLs."""

    def __init__(self, config: PortalConfig) -> None:
        self.config = config
        self.session = requests.Session()
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
                body = read_bounded(
                    response.iter_content(_CHUNK),
                    self.config.max_body_bytes,
                    response.status_code,
                    rest_method,
                )
                return HttpResponse(response.status_code, body, {k.lower(): v for k, v in response.headers.items()})
        except requests.Timeout:
            failure = Bitrix24TransportError("TIMEOUT", f"no answer within {timeout:g} s", method=rest_method)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            failure = Bitrix24TransportError(
                "CONNECTION_FAILED",
                "the connection failed or was dropped before an answer",
                method=rest_method,
            )
        except requests.RequestException as exc:
            failure = Bitrix24TransportError("REQUEST_FAILED", type(exc).__name__, method=rest_method)
        # Raised outside the except block so that the library's exception, whose text holds the URL, is not
        # attached as context.
        raise failure

    def token_fetch(self, url: str, params: dict[str, str]) -> tuple[int, bytes]:
        response = self.fetch("GET", url, "oauth/token", params=params)
        return response.status, response.body

    def close(self) -> None:
        self.session.close()


class Bitrix24Client:
    """
    Call the Bitrix24 REST API synchronously.

    :param config: The portal settings, e.g. from :func:`parse_connection`.
    :param kwargs: Passed to :class:`~airflow_provider_bitrix24.client.core.Engine` (``token_store``,
        ``on_new_secret``, ``retry_policy``, ``logger``).
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

    def run(self, flow: Flow) -> Any:
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
                    value = self.transport.send(action.request)
                elif isinstance(action, Sleep):
                    self.sleep(action.seconds)
                elif isinstance(action, Refresh):
                    assert self.engine.oauth is not None
                    self.engine.oauth.refresh(action.failed_token, self.transport.token_fetch)
            except Bitrix24Error as exc:
                error = exc

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call ``method`` and return its ``result``."""
        return self.run(self.engine.call_flow(method, params)).result

    def batch(self, commands: Sequence[Command] | Mapping[str, Command], *, halt: bool = False) -> list[BatchItem]:
        """Run commands through ``batch`` (any number, 50 per request); one :class:`BatchItem` per command."""
        result: list[BatchItem] = self.run(self.engine.batch_flow(commands, halt=halt))
        return result

    def list_all(self, method: str, params: Mapping[str, Any] | None = None, limit: int | None = None) -> list[Any]:
        """Every item of a list method, following ``next``."""
        items: list[Any] = self.run(self.engine.list_flow(method, params, limit))
        return items
