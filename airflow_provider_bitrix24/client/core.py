"""
The transport-free core of the client: one implementation for the sync and the async client.

A call is written once, as a generator (a *flow*) that yields what it needs done: :class:`Send` an HTTP request,
:class:`Sleep`, or :class:`Refresh` the OAuth token. The sync client performs those with ``requests`` and
``time.sleep``, the async client with ``httpx`` and ``asyncio.sleep``. Request building, envelope parsing,
error mapping, pacing, retries, OAuth refresh, batching and paging all live here, so both clients behave the
same by construction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from airflow_provider_bitrix24.client.config import (
    OAuthCredentials,
    PortalConfig,
    WebhookAuth,
    parse_base_url,
)
from airflow_provider_bitrix24.client.errors import (
    TRANSIENT_HTTP_STATUSES,
    Bitrix24ApiError,
    Bitrix24ConfigError,
    Bitrix24Error,
    Bitrix24OperationTimeLimitError,
    Bitrix24RateLimitError,
    Bitrix24ResponseError,
    Bitrix24TokenExpiredError,
    error_from_payload,
)
from airflow_provider_bitrix24.client.limits import LeakyBucket, OperatingTracker, shared_bucket
from airflow_provider_bitrix24.client.oauth import OAuthSession, TokenStore, shared_oauth_session
from airflow_provider_bitrix24.client.redaction import install_log_filter, register_secret
from airflow_provider_bitrix24.client.retry import RetryPolicy

#: Most commands one ``batch`` request may carry.
BATCH_LIMIT: Final = 50
_REDIRECTS: Final = frozenset({301, 302, 307, 308})
_MAX_REDIRECTS: Final = 3
USER_AGENT: Final = "airflow-provider-bitrix24"

log = logging.getLogger("airflow_provider_bitrix24.client")


# --------------------------------------------------------------------------- wire types


@dataclass(frozen=True, repr=False)
class HttpRequest:
    """One HTTP request; ``url`` and ``json`` may hold secrets, ``redacted`` never does."""

    method: str
    url: str
    redacted: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    rest_method: str = ""
    token: str | None = None

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {self.redacted})"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Envelope:
    """A successful answer: ``result`` plus the list fields and the ``time`` block."""

    result: Any
    time: Mapping[str, Any]
    next: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class Send:
    request: HttpRequest


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Refresh:
    failed_token: str | None


Action = Send | Sleep | Refresh
Flow = Generator[Action, Any, Any]


@dataclass(frozen=True)
class BatchItem:
    """
    The outcome of one command of a batch.

    :param key: The command's key (its position as a string when commands were given as a list).
    :param method: The REST method of the command.
    :param result: The command's ``result`` when it succeeded.
    :param error: The command's error when it failed.
    """

    key: str
    method: str
    result: Any = None
    error: Bitrix24Error | None = None
    next: int | None = None
    total: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Command = tuple[str, Mapping[str, Any] | None]


# --------------------------------------------------------------------------- encoding and parsing


def _php_pairs(value: Any, prefix: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _php_pairs(item, f"{prefix}[{key}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _php_pairs(item, f"{prefix}[{index}]")
    elif isinstance(value, bool):
        yield prefix, "Y" if value else "N"
    elif value is None:
        yield prefix, ""
    else:
        yield prefix, str(value)


def php_query(params: Mapping[str, Any]) -> str:
    """Encode parameters as a PHP-style query string (``a[b][0]=1``), as batch commands need."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        pairs.extend(_php_pairs(value, str(key)))
    return urlencode(pairs)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def _section(value: Any) -> dict[str, Any]:
    """A batch result section: PHP sends an empty map as ``[]`` and a 0..n-1 map as a list."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def parse_response(response: HttpResponse, method: str, operating: OperatingTracker | None = None) -> Envelope:
    """
    Turn an HTTP answer into an :class:`Envelope`, or raise the matching :class:`Bitrix24Error`.

    Anything that is not the Bitrix24 envelope (an HTML page from a proxy, an empty or truncated body, JSON
    without ``result``) raises :class:`Bitrix24ResponseError` with the HTTP status. An empty or unparsable body is
    retryable whatever the status (a cut connection, as with a dropped one); well-formed JSON of the wrong shape is
    retryable when the status says the portal or a gateway was briefly unavailable.
    """
    status = response.status
    transient = status in TRANSIENT_HTTP_STATUSES
    content_type = response.headers.get("content-type", "unknown type")
    if not response.body.strip():
        raise Bitrix24ResponseError(
            "EMPTY_RESPONSE",
            "the portal sent an empty body",
            status=status,
            method=method,
            retryable=True,
        )
    try:
        data = json.loads(response.body)
    except (UnicodeDecodeError, ValueError):
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            f"the answer is not JSON ({content_type}, {len(response.body)} bytes); "
            "a proxy or gateway may have answered instead of the portal",
            status=status,
            method=method,
            retryable=True,
        ) from None
    if not isinstance(data, dict):
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            "the JSON answer is not an object",
            status=status,
            method=method,
            retryable=transient,
        )
    if "error" in data:
        code, description = data["error"], data.get("error_description") or ""
        if isinstance(code, Mapping):  # REST 3.0 shape {"error": {"code", "message"}}
            code, description = code.get("code", "UNKNOWN"), code.get("message", "")
        unblocks = operating.unblocks_at(method) if operating else None
        raise error_from_payload(str(code), str(description), status=status, method=method, unblocks_at=unblocks)
    if "result" not in data:
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            "the JSON answer has neither result nor error",
            status=status,
            method=method,
            retryable=transient,
        )
    if status >= 400:
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE", "an error status came with a result body", status=status, method=method
        )
    time_block = data.get("time")
    return Envelope(
        result=data["result"],
        time=time_block if isinstance(time_block, Mapping) else {},
        next=_as_int(data.get("next")),
        total=_as_int(data.get("total")),
    )


# --------------------------------------------------------------------------- the engine


class Engine:
    """
    Request building and call flows for one portal, shared by the sync and async clients.

    :param config: The portal settings.
    :param token_store: Where rotated OAuth tokens are persisted (OAuth only).
    :param on_new_secret: Called with every secret the client learns (e.g. Airflow's ``mask_secret``).
    :param retry_policy: Overrides the policy built from ``config.max_retries``.
    :param logger: Where the one-line-per-call INFO record goes.
    """

    def __init__(
        self,
        config: PortalConfig,
        *,
        token_store: TokenStore | None = None,
        on_new_secret: Callable[[str], None] | None = None,
        retry_policy: RetryPolicy | None = None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        install_log_filter()
        self.config = config
        self.base_url = config.base_url
        self.retry_policy = retry_policy or RetryPolicy(max_retries=config.max_retries)
        self.bucket: LeakyBucket = shared_bucket(config.portal_key, config.rate_limit)
        self.operating = OperatingTracker()
        self.log = logger or log
        self.oauth: OAuthSession | None = None
        for secret in config.auth.secrets:
            register_secret(secret)
            if on_new_secret:
                on_new_secret(secret)
        if isinstance(config.auth, OAuthCredentials):
            self.oauth = shared_oauth_session(config.portal_key, config.auth, token_store, on_new_secret)

    def __repr__(self) -> str:
        return f"Engine(base_url={self.base_url!r}, auth={self.config.auth!r})"

    # -- requests

    def build_request(self, method: str, params: Mapping[str, Any] | None) -> HttpRequest:
        """The POST request of a REST call, with the credential where Bitrix24 expects it."""
        if not method or not isinstance(method, str) or "/" in method or "?" in method:
            raise Bitrix24ConfigError("method", f"must be a REST method name such as 'profile', got {method!r}")
        body = dict(params or {})
        auth = self.config.auth
        if isinstance(auth, WebhookAuth):
            url = f"{self.base_url}/rest/{auth.user_id}/{auth.code}/{method}"
            redacted = f"{self.base_url}/rest/{auth.user_id}/***/{method}"
            token = None
        else:
            assert self.oauth is not None
            token = self.oauth.access_token
            body["auth"] = token or ""
            url = redacted = f"{self.base_url}/rest/{method}"
        return HttpRequest("POST", url, redacted, json=body, rest_method=method, token=token)

    def _follow_redirect(self, response: HttpResponse, method: str) -> bool:
        """Move to the portal's new address after a rename (POST must be re-sent, not turned into GET)."""
        location = response.headers.get("location", "")
        if response.status not in _REDIRECTS or not location:
            return False
        parts = urlsplit(location)
        if not parts.netloc:
            return False
        try:
            new_base, _ = parse_base_url(f"{parts.scheme}://{parts.netloc}", "redirect Location")
        except Bitrix24ConfigError:
            return False
        if new_base == self.base_url:
            return False
        self.log.warning("Bitrix24 portal moved from %s to %s; following", self.base_url, new_base)
        self.base_url = new_base
        return True

    # -- flows

    def call_flow(self, method: str, params: Mapping[str, Any] | None = None) -> Flow:
        """One REST call with pacing, retries of transient failures, redirects and one OAuth refresh."""
        attempt = 0
        waited = 0.0
        refreshed = False
        redirects = 0
        if self.oauth is not None and not self.oauth.access_token:
            yield Refresh(None)
        while True:
            pause = self.operating.wait_before(method)
            if pause and waited + pause <= self.retry_policy.max_total_wait:
                self.log.info("Bitrix24 %s is over its operating-time budget; waiting %.1f s", method, pause)
                waited += pause
                yield Sleep(pause)
            pause = self.bucket.reserve()
            if pause > 0:
                yield Sleep(pause)
            request = self.build_request(method, params)
            started = time.monotonic()
            try:
                response = yield Send(request)
                if redirects < _MAX_REDIRECTS and self._follow_redirect(response, method):
                    redirects += 1
                    continue
                envelope = parse_response(response, method, self.operating)
            except Bitrix24TokenExpiredError:
                if self.oauth is None or refreshed:
                    raise
                refreshed = True
                self.log.info("Bitrix24 access token expired; refreshing it")
                yield Refresh(request.token)
                continue
            except Bitrix24Error as err:
                if isinstance(err, Bitrix24RateLimitError):
                    self.bucket.note_rejected()
                delay = self.retry_policy.delay(err, attempt, waited, time.monotonic() - started)
                if delay is None:
                    raise self._final(err) from None
                attempt += 1
                waited += delay
                self.log.warning(
                    "Bitrix24 %s failed with %s; retry %d/%d in %.1f s",
                    method,
                    err.code,
                    attempt,
                    self.retry_policy.max_retries,
                    delay,
                )
                yield Sleep(delay)
                continue
            operating = self.operating.record(method, envelope.time)
            self.log.info(
                "Bitrix24 %s -> HTTP %s in %.3f s (operating %.2f s) %s",
                method,
                response.status,
                time.monotonic() - started,
                operating or 0.0,
                request.redacted,
            )
            return envelope

    def _final(self, err: Bitrix24Error) -> Bitrix24Error:
        """Say when an operating-time block lifts, when the wait did not fit the retry budget."""
        if isinstance(err, Bitrix24OperationTimeLimitError) and err.retryable:
            unblocks = err.unblocks_at
            when = (
                f"unblocks at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(unblocks))} "
                f"(in {max(0.0, unblocks - time.time()):.0f} s)"
                if unblocks
                else "unblocks within 10 minutes"
            )
            desc = f"{err.description.rstrip('.')}; the method {when}"
            new = Bitrix24OperationTimeLimitError(err.code, desc, status=err.status, method=err.method)
            new.unblocks_at = unblocks
            return new
        return err

    def batch_flow(self, commands: Sequence[Command] | Mapping[str, Command], *, halt: bool = False) -> Flow:
        """
        Run any number of commands through ``batch``, 50 per request, and return one :class:`BatchItem` per
        command, in input order. A failed command never hides the others' results. Commands whose own error is
        transient (rate or operating limit, server error) are sent again, within the retry budget; a command
        the portal refuses to run inside a batch is sent as a single call.
        """
        items = list(commands.items()) if isinstance(commands, Mapping) else list(enumerate(commands))
        keyed: list[tuple[str, Command]] = [(str(key), cmd) for key, cmd in items]
        results: dict[str, BatchItem] = {}
        pending = keyed
        attempt = 0
        waited = 0.0
        while pending:
            retry: list[tuple[str, Command]] = []
            last_error: Bitrix24Error | None = None
            for start in range(0, len(pending), BATCH_LIMIT):
                chunk = pending[start : start + BATCH_LIMIT]
                chunk_results = yield from self._batch_chunk(chunk, halt=halt)
                for key, cmd in chunk:
                    item = chunk_results[key]
                    if item.error is not None and item.error.code == "ERROR_BATCH_METHOD_NOT_ALLOWED":
                        item = yield from self._single(key, cmd)
                    if item.error is not None and item.error.retryable and not halt:
                        retry.append((key, cmd))
                        last_error = item.error
                    results[key] = item
            if not retry or last_error is None:
                break
            delay = self.retry_policy.delay(last_error, attempt, waited)
            if delay is None:
                break
            attempt += 1
            waited += delay
            self.log.warning(
                "Bitrix24 batch: %d command(s) failed with %s; retry %d/%d in %.1f s",
                len(retry),
                last_error.code,
                attempt,
                self.retry_policy.max_retries,
                delay,
            )
            yield Sleep(delay)
            pending = retry
        return [results[key] for key, _ in keyed]

    def _single(self, key: str, cmd: Command) -> Generator[Action, Any, BatchItem]:
        method, params = cmd
        try:
            envelope = yield from self.call_flow(method, params)
        except Bitrix24ApiError as err:
            return BatchItem(key, method, error=err)
        return BatchItem(key, method, result=envelope.result, next=envelope.next, total=envelope.total)

    def _batch_chunk(
        self, chunk: Sequence[tuple[str, Command]], *, halt: bool
    ) -> Generator[Action, Any, dict[str, BatchItem]]:
        # Keys get a letter prefix so that PHP never turns the sections into lists.
        cmd: dict[str, str] = {}
        for key, (method, params) in chunk:
            if not method or not isinstance(method, str) or "?" in method:
                raise Bitrix24ConfigError("method", f"must be a REST method name, got {method!r}")
            query = php_query(params or {})
            cmd[f"c{key}"] = f"{method}?{query}" if query else method
        envelope = yield from self.call_flow("batch", {"halt": 1 if halt else 0, "cmd": cmd})
        body = envelope.result if isinstance(envelope.result, Mapping) else {}
        ok = _section(body.get("result"))
        errors = _section(body.get("result_error"))
        totals = _section(body.get("result_total"))
        nexts = _section(body.get("result_next"))
        out: dict[str, BatchItem] = {}
        for key, (method, _) in chunk:
            wire = f"c{key}"
            if wire in errors:
                raw = errors[wire] if isinstance(errors[wire], Mapping) else {}
                err = error_from_payload(
                    str(raw.get("error", "UNKNOWN")),
                    str(raw.get("error_description") or ""),
                    status=None,
                    method=method,
                    unblocks_at=self.operating.unblocks_at(method),
                )
                out[key] = BatchItem(key, method, error=err)
            elif wire in ok:
                out[key] = BatchItem(
                    key,
                    method,
                    result=ok[wire],
                    next=_as_int(nexts.get(wire)),
                    total=_as_int(totals.get(wire)),
                )
            else:
                not_run = Bitrix24ApiError(
                    "NOT_EXECUTED", "the batch stopped before this command (halt)", method=method
                )
                out[key] = BatchItem(key, method, error=not_run)
        return out

    def list_flow(self, method: str, params: Mapping[str, Any] | None = None, limit: int | None = None) -> Flow:
        """Collect every item of a list method by following ``next`` (at most ``limit`` items)."""
        items: list[Any] = []
        query = dict(params or {})
        while True:
            envelope = yield from self.call_flow(method, query)
            page = envelope.result
            if isinstance(page, Mapping):
                page = list(page.values())
            items.extend(page if isinstance(page, list) else [page])
            if envelope.next is None or (limit is not None and len(items) >= limit):
                return items[:limit] if limit is not None else items
            query["start"] = envelope.next


def read_bounded(chunks: Iterable[bytes], limit: int, status: int, method: str) -> bytes:
    """Join body chunks, refusing bodies over ``limit`` bytes."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            raise Bitrix24ResponseError(
                "RESPONSE_TOO_LARGE", f"the answer exceeds {limit} bytes", status=status, method=method
            )
    return bytes(buffer)
