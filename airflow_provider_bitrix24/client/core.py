"""
The transport-free core of the client: one implementation for the sync and the async client.

A call is written once, as a generator (a *flow*) that yields what it needs done: :class:`Acquire` a slot from the
portal's limits, :class:`Sleep`, :class:`Send` an HTTP request, :class:`Report` what the portal said about its
limits, or :class:`Refresh` the OAuth token. The sync client performs those with ``requests``, threads and
``time.sleep``, the async client with ``httpx`` and ``asyncio``. Request building, envelope parsing, error mapping,
pacing, retries, OAuth refresh, batching and paging all live here, so both clients behave the same by construction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from airflow_provider_bitrix24.client.coerce import as_int, as_seconds
from airflow_provider_bitrix24.client.config import (
    OAuthCredentials,
    PortalConfig,
    WebhookAuth,
    is_loopback,
)
from airflow_provider_bitrix24.client.errors import (
    TRANSIENT_HTTP_STATUSES,
    Bitrix24ApiError,
    Bitrix24ConfigError,
    Bitrix24Error,
    Bitrix24OperationTimeLimitError,
    Bitrix24PortalMovedError,
    Bitrix24RateLimitError,
    Bitrix24ResponseError,
    Bitrix24TokenExpiredError,
    error_from_payload,
)
from airflow_provider_bitrix24.client.limits import OPERATING_LIMIT, UNKNOWN_BLOCK, Grant, Limiter, local_limiter
from airflow_provider_bitrix24.client.oauth import OAuthSession, TokenStore, shared_oauth_session
from airflow_provider_bitrix24.client.redaction import install_log_filter, redact, register_secret
from airflow_provider_bitrix24.client.retry import RetryPolicy

#: Most commands one ``batch`` request may carry.
BATCH_LIMIT: Final = 50
_REDIRECTS: Final = frozenset({301, 302, 307, 308})
_MAX_REDIRECTS: Final = 3
USER_AGENT: Final = "airflow-provider-bitrix24"
#: Bitrix24's cloud domains: a cloud portal renamed by its owner moves within them.
CLOUD_DOMAINS: Final = (
    "bitrix24.com",
    "bitrix24.ru",
    "bitrix24.de",
    "bitrix24.eu",
    "bitrix24.es",
    "bitrix24.fr",
    "bitrix24.it",
    "bitrix24.pl",
    "bitrix24.uk",
    "bitrix24.in",
    "bitrix24.cn",
    "bitrix24.jp",
    "bitrix24.by",
    "bitrix24.kz",
    "bitrix24.ua",
    "bitrix24.vn",
    "bitrix24.id",
    "bitrix24.com.br",
    "bitrix24.com.tr",
    "bitrix24.co",
)
#: Longest error code and description kept from an answer (a hostile portal could send megabytes).
_MAX_CODE: Final = 100
_MAX_DESCRIPTION: Final = 1000
#: While a method is blocked, how often the wait looks for an announced end (local memory only, no request).
_BLOCK_CHECK: Final = 1.0
#: A list's ``next`` never moves further than this past the current page's start (pages hold 50 rows).
_MAX_PAGE_STEP: Final = 1000

log = logging.getLogger("airflow_provider_bitrix24.client")


# --------------------------------------------------------------------------- wire types


@dataclass(frozen=True, repr=False)
class HttpRequest:
    """One HTTP request; ``url`` and ``json`` may hold secrets, ``redacted`` never does."""

    method: str
    url: str
    redacted: str
    json: dict[str, Any] | None = None
    rest_method: str = ""
    token: str | None = None

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {self.redacted})"


_UNDECODED: Final[Any] = object()


@dataclass(frozen=True)
class HttpResponse:
    """
    One HTTP answer.

    :param parsed: The body already decoded as JSON (the async client decodes large bodies off its event loop),
        or the exception decoding raised.
    """

    status: int
    #: May hold secrets (a token answer's pair).
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    parsed: Any = field(default=_UNDECODED, repr=False, compare=False)


def decode_json(body: bytes) -> Any:
    """The JSON value of a body, or the exception decoding it raised (returned, not raised)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return exc


@dataclass(frozen=True)
class Envelope:
    """A successful answer: ``result`` plus the list fields and the ``time`` block."""

    result: Any
    time: Mapping[str, Any]
    next: int | None = None
    total: int | None = None


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Send:
    """Send the request; the answer is an :class:`HttpResponse` (transport failures are thrown in)."""

    request: HttpRequest


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Acquire:
    """
    Ask the limiter for a request slot for ``method``; the answer is a :class:`Grant`. ``force``: the flow has just
    waited out the method's block, so a slot is booked whatever the limiter's record says.
    """

    method: str
    force: bool = False


@dataclass(frozen=True)
class Report:
    """
    Tell the limiter what the portal said: ``"rejected"`` (the rate limit answered 503) or ``"blocked"``
    (``method`` is refused by the operating-time limit until ``until``).
    """

    kind: str
    method: str = ""
    until: float = 0.0


@dataclass(frozen=True)
class Refresh:
    """Refresh the OAuth token unless it is no longer ``failed_token``."""

    failed_token: str | None


@dataclass(frozen=True)
class SyncTokens:
    """Adopt the stored OAuth pair if another process rotated the chain."""


Action = Send | Sleep | Acquire | Report | Refresh | SyncTokens
Flow = Generator[Action, Any, Any]


class Stopped(Exception):
    """Raised into a flow's caller when the flow's ``should_stop`` said to send nothing more."""


@dataclass(frozen=True)
class BatchItem:
    """
    The outcome of one command of a batch.

    :param key: The command's key: the caller's own key, or its position as a string for a list of commands.
    :param method: The REST method of the command.
    :param result: The command's ``result`` when it succeeded.
    :param error: The command's error when it failed.
    :param time: The command's ``time`` block, when the portal sent one.
    """

    key: str
    method: str
    result: Any = None
    error: Bitrix24Error | None = None
    next: int | None = None
    total: int | None = None
    time: Mapping[str, Any] | None = None

    @property
    def processing(self) -> float:
        """Seconds the portal spent executing the command (0 when it did not say)."""
        return (as_seconds(self.time.get("processing")) or 0.0) if self.time is not None else 0.0

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


def _section(value: Any) -> dict[str, Any]:
    """A batch result section: PHP sends an empty map as ``[]`` and a 0..n-1 map as a list."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else "" if value is None else json.dumps(value)[:limit]
    return redact(text[:limit])


def parse_response(response: HttpResponse, method: str, limiter: Limiter | None = None) -> Envelope:
    """
    Turn an HTTP answer into an :class:`Envelope`, or raise the matching :class:`Bitrix24Error`.

    Anything that is not the Bitrix24 envelope (an HTML page from a proxy, an empty or truncated body, JSON
    without ``result``, JSON nested too deep to read) raises :class:`Bitrix24ResponseError` with the HTTP status. An
    empty or unparsable body is retryable whatever the status (a cut connection, as with a dropped one);
    well-formed JSON of the wrong shape is retryable when the status says the portal or a gateway was briefly
    unavailable. Error descriptions are redacted like URLs are: a portal may echo what it was sent.
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
    data = response.parsed if response.parsed is not _UNDECODED else decode_json(response.body)
    if isinstance(data, RecursionError):
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE", "the JSON answer is nested too deeply to read", status=status, method=method
        )
    if isinstance(data, Exception):
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            f"the answer is not JSON ({_text(content_type, 80)}, {len(response.body)} bytes); "
            "a proxy or gateway may have answered instead of the portal",
            status=status,
            method=method,
            retryable=True,
        )
    if not isinstance(data, dict):
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            "the JSON answer is not an object",
            status=status,
            method=method,
            retryable=transient,
        )
    if "error" in data:
        code, description = data["error"], data.get("error_description")
        if isinstance(code, Mapping):  # REST 3.0 shape {"error": {"code", "message"}}
            code, description = code.get("code", ""), code.get("message", "")
        unblocks = limiter.unblocks_at(method) if limiter is not None else None
        raise error_from_payload(
            _text(code, _MAX_CODE),
            _text(description, _MAX_DESCRIPTION),
            status=status,
            method=method,
            unblocks_at=unblocks,
        )
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
        next=as_int(data.get("next")),
        total=as_int(data.get("total")),
    )


def list_rows(result: Any) -> list[Any]:
    """
    The rows of one page of a list method.

    Most list methods answer a list; some wrap it in an object with one key (``tasks.task.list`` ->
    ``{"tasks": [...]}``, ``crm.item.list`` -> ``{"items": [...]}``); a few answer a map keyed by id.
    """
    if isinstance(result, list):
        return result
    if isinstance(result, Mapping):
        if len(result) == 1:
            (only,) = result.values()
            if isinstance(only, list):
                return only
            if isinstance(only, Mapping) and all(isinstance(v, Mapping) for v in only.values()):
                return list(only.values())
        return list(result.values())
    return [result]


def _check_method(method: Any) -> None:
    """Refuse what cannot be a REST method name (it goes into a URL path, or a batch command before its ``?``)."""
    if not method or not isinstance(method, str) or "/" in method or "?" in method:
        raise Bitrix24ConfigError("method", f"must be a REST method name such as 'profile', got {method!r}")


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def _in_cloud(host: str) -> bool:
    return any(host.endswith("." + domain) for domain in CLOUD_DOMAINS)


def redirect_target(base_url: str, location: str) -> str | None:
    """
    The new base URL a portal's redirect may be followed to, with the credential, or ``None``.

    Allowed: the same host (an upgrade from http to https included), or, from one Bitrix24 cloud portal, another
    Bitrix24 cloud portal over https (a renamed cloud portal). Never plain http unless both are loopback addresses.
    Everything else (another host, a proxy's login page, a TLS-inspecting filter) would receive the webhook code
    or the token, so it is refused.
    """
    try:
        new_scheme, new_host, new_port = _origin(location)
        old_scheme, old_host, old_port = _origin(base_url)
    except ValueError:
        return None
    if new_scheme not in {"http", "https"} or not new_host:
        return None
    if new_scheme == "http" and not (is_loopback(new_host) and is_loopback(old_host)):
        return None
    same_host = new_host == old_host and (
        new_port == old_port or (old_scheme == "http" and new_scheme == "https" and new_port == 443)
    )
    renamed_cloud = new_scheme == "https" and _in_cloud(old_host) and _in_cloud(new_host)
    if not (same_host or renamed_cloud):
        return None
    netloc = urlsplit(location).netloc.lower().rsplit("@", 1)[-1]
    target = f"{new_scheme}://{netloc}"
    return None if target == base_url else target


def _origin_or_none(url: str) -> tuple[str, str, int] | None:
    try:
        return _origin(url)
    except ValueError:
        return None


def _shown(location: str) -> str:
    """Scheme, host and port of a Location, for an error message (its path may hold a credential)."""
    try:
        scheme, host, _ = _origin(location)
        port = urlsplit(location).port
    except ValueError:
        return "an unreadable address"
    return f"{scheme}://{host}{f':{port}' if port else ''}" if host else "an address without a host"


# --------------------------------------------------------------------------- the engine


class Engine:
    """
    Request building and call flows for one portal, shared by the sync and async clients.

    :param config: The portal settings.
    :param token_store: Where rotated OAuth tokens are persisted (OAuth only).
    :param on_new_secret: Called with every secret the client learns (e.g. Airflow's ``mask_secret``); the async
        client also accepts a coroutine function.
    :param retry_policy: Overrides the policy built from ``config.max_retries``.
    :param logger: Where the one-line-per-call INFO record goes.
    :param limiter: The portal's limits; by default this process's (see :mod:`.limits`).
    """

    def __init__(
        self,
        config: PortalConfig,
        *,
        token_store: TokenStore | None = None,
        on_new_secret: Callable[[str], Any] | None = None,
        retry_policy: RetryPolicy | None = None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        install_log_filter()
        self.config = config
        self.base_url = config.base_url
        self.retry_policy = retry_policy or RetryPolicy(max_retries=config.max_retries)
        self.limiter: Limiter = limiter or local_limiter(config)
        self.token_store = token_store
        self.on_new_secret = on_new_secret
        self.log = logger or log
        self.oauth: OAuthSession | None = None
        self._synced = False
        for secret in config.auth.secrets:
            register_secret(secret)
        if isinstance(config.auth, OAuthCredentials):
            self.oauth = shared_oauth_session(config.portal_key, config.auth)

    def __repr__(self) -> str:
        return f"Engine(base_url={self.base_url!r}, auth={self.config.auth!r})"

    # -- requests

    def build_request(self, method: str, params: Mapping[str, Any] | None) -> HttpRequest:
        """The POST request of a REST call, with the credential where Bitrix24 expects it."""
        _check_method(method)
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

    def _follow_redirect(self, response: HttpResponse, method: str, redirects: int) -> bool:
        """
        Move to the portal's new address after a rename (the POST is sent again, not turned into a GET), when the
        move is one that may receive the credential; refuse it with a clear error otherwise.
        """
        location = response.headers.get("location", "")
        if response.status not in _REDIRECTS or not location:
            return False
        target = redirect_target(self.base_url, location)
        problem = None
        if redirects >= _MAX_REDIRECTS:
            problem = f"redirected more than {_MAX_REDIRECTS} times"
        elif target is None and _origin_or_none(location) == _origin_or_none(self.base_url):
            problem = "redirected within the same host, so its REST endpoint is not answering (maintenance, or a login page in front of it?)"
        elif target is None:
            problem = (
                f"moving to {_shown(location)}; the credential is sent only to the same host or, from a Bitrix24 cloud "
                "portal, to another one over https. If the portal really moved, update the connection's host"
            )
        if problem is not None:
            raise Bitrix24PortalMovedError(
                "PORTAL_MOVED",
                f"the portal answered HTTP {response.status} {problem}",
                status=response.status,
                method=method,
            )
        self.log.warning("Bitrix24 portal moved from %s to %s; following", self.base_url, target)
        self.base_url = str(target)
        return True

    # -- flows

    def call_flow(
        self, method: str, params: Mapping[str, Any] | None = None, *, should_stop: Callable[[], bool] | None = None
    ) -> Flow:
        """
        One REST call with pacing, retries of transient failures, operating-limit waits, redirects and one OAuth
        refresh. ``should_stop`` is asked before every send; when it says so, :class:`Stopped` is raised.
        """
        attempt = 0
        waited = 0.0
        refreshed = False
        redirects = 0
        block_until: float | None = None
        if self.oauth is not None:
            if not self._synced:
                self._synced = True
                yield SyncTokens()
            if not self.oauth.access_token:
                yield Refresh(None)
        force = False
        while True:
            grant: Grant = yield Acquire(method, force)
            force = False
            if grant.blocked_until is not None:
                pause = yield from self._wait_block(method, grant.blocked_until, waited)
                waited += pause
                force = True
                continue
            if grant.wait > 0:
                yield Sleep(grant.wait)
            if should_stop is not None and should_stop():
                raise Stopped(method)
            request = self.build_request(method, params)
            started = time.monotonic()
            try:
                response = yield Send(request)
                if self._follow_redirect(response, method, redirects):
                    redirects += 1
                    continue
                envelope = parse_response(response, method, self.limiter)
            except Bitrix24TokenExpiredError:
                if self.oauth is None or refreshed:
                    raise
                refreshed = True
                self.log.info("Bitrix24 access token expired; refreshing it")
                yield Refresh(request.token)
                continue
            except Bitrix24OperationTimeLimitError as err:
                until = err.unblocks_at
                later = until is not None and until > time.time() and (block_until is None or until > block_until + 1)
                if not later:
                    # Real error answers carry no time block: hold the method a while, then look once more; a
                    # second refusal with no later reset known is raised.
                    if block_until is not None:
                        raise self.blocked_error(method, None) from None
                    until = time.time() + UNKNOWN_BLOCK
                assert until is not None
                block_until = until
                yield Report("blocked", method, until)
                pause = yield from self._wait_block(method, until, waited)
                waited += pause
                force = True
                continue
            except Bitrix24Error as err:
                if isinstance(err, Bitrix24RateLimitError):
                    yield Report("rejected")
                delay = self.retry_policy.delay(err, attempt, waited, time.monotonic() - started)
                if delay is None:
                    raise
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
            operating = self.limiter.observe(method, envelope.time)
            if operating is not None and operating > OPERATING_LIMIT:
                # The call that crosses the limit completes; the next one is refused. Tell the other processes.
                until = self.limiter.blocked_until(method)
                if until is not None:
                    yield Report("blocked", method, until)
            self.log.info(
                "Bitrix24 %s -> HTTP %s in %.3f s (operating %.2f s) %s",
                method,
                response.status,
                time.monotonic() - started,
                operating or 0.0,
                request.redacted,
            )
            return envelope

    def _wait_block(self, method: str, until: float, waited: float) -> Generator[Action, Any, float]:
        """
        Sleep until a blocked method unblocks, if that fits the retry budget; return the seconds slept. The sleep
        is cut short when an answer (of another request of this process) announces an earlier end.
        """
        pause = max(0.0, until - time.time()) + 0.5
        if waited + pause > self.retry_policy.max_total_wait:
            raise self.blocked_error(method, until)
        self.log.info("Bitrix24 %s is over its operating-time budget; waiting %.1f s", method, pause)
        slept = 0.0
        while slept < pause:
            step = min(_BLOCK_CHECK, pause - slept)
            yield Sleep(step)
            slept += step
            announced = self.limiter.unblocks_at(method)
            if announced is not None:
                pause = min(pause, slept + max(0.0, announced - time.time()) + 0.5)
        return slept

    def blocked_error(self, method: str, unblocks: float | None) -> Bitrix24OperationTimeLimitError:
        """The retryable error for a method blocked by the operating-time limit longer than the retry budget."""
        when = (
            f"unblocks at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(unblocks))} "
            f"(in {max(0.0, unblocks - time.time()):.0f} s)"
            if unblocks
            else "unblocks within 10 minutes"
        )
        err = Bitrix24OperationTimeLimitError(
            "OPERATION_TIME_LIMIT",
            f"Method is blocked due to operation time limit; the method {when}",
            status=429,
            method=method,
            retryable=True,
        )
        err.unblocks_at = unblocks
        return err

    def single_flow(self, key: str, cmd: Command, should_stop: Callable[[], bool] | None = None) -> Flow:
        """One command sent as its own call, returned as a :class:`BatchItem`."""
        method, params = cmd
        try:
            envelope = yield from self.call_flow(method, params, should_stop=should_stop)
        except Bitrix24ApiError as err:
            return {key: BatchItem(key, method, error=err)}
        return {
            key: BatchItem(
                key, method, result=envelope.result, next=envelope.next, total=envelope.total, time=envelope.time
            )
        }

    def chunk_flow(
        self, chunk: Sequence[tuple[str, Command]], *, halt: bool, should_stop: Callable[[], bool] | None = None
    ) -> Flow:
        """
        One ``batch`` request of up to 50 commands; returns ``{key: BatchItem}``.

        The commands' keys reach the portal unchanged, so ``$result[key][...]`` references between commands of
        the same request resolve. A command that was sent but is in no section of the answer (and not after a
        halting error) is a bad answer, retryable, never taken for "not executed".
        """
        cmd: dict[str, str] = {}
        for key, (method, params) in chunk:
            _check_method(method)
            query = php_query(params or {})
            cmd[key] = f"{method}?{query}" if query else method
        envelope = yield from self.call_flow("batch", {"halt": 1 if halt else 0, "cmd": cmd}, should_stop=should_stop)
        body = envelope.result if isinstance(envelope.result, Mapping) else {}
        ok = _section(body.get("result"))
        errors = _section(body.get("result_error"))
        totals = _section(body.get("result_total"))
        nexts = _section(body.get("result_next"))
        times = _section(body.get("result_time"))
        outer_operating = as_seconds(envelope.time.get("operating"))
        outer_block = (
            as_seconds(envelope.time.get("operating_reset_at"))
            if outer_operating is not None and outer_operating > OPERATING_LIMIT
            else None
        )
        out: dict[str, BatchItem] = {}
        blocks: list[Report] = []
        halted = False
        for key, (method, _) in chunk:
            if key in times and isinstance(times[key], Mapping):
                self.limiter.observe(method, times[key])
            if key in errors:
                raw = errors[key] if isinstance(errors[key], Mapping) else {}
                err = error_from_payload(
                    _text(raw.get("error", ""), _MAX_CODE),
                    _text(raw.get("error_description"), _MAX_DESCRIPTION),
                    status=None,
                    method=method,
                    unblocks_at=self.limiter.unblocks_at(method),
                )
                if isinstance(err, Bitrix24OperationTimeLimitError):
                    # When does the command's method unblock: its own timing if the answer has it, else what the
                    # method's earlier answers said, else the outer block when it is over the limit itself (portals
                    # that bill a batch per command report the busiest method there), else look again in 10 s.
                    own = times.get(key)
                    reset = as_seconds(own.get("operating_reset_at")) if isinstance(own, Mapping) else None
                    until = reset or err.unblocks_at or outer_block or time.time() + UNKNOWN_BLOCK
                    err.unblocks_at = until
                    blocks.append(Report("blocked", method, until))
                out[key] = BatchItem(key, method, error=err)
                halted = halted or halt
            elif key in ok:
                own_time = times.get(key)
                out[key] = BatchItem(
                    key,
                    method,
                    result=ok[key],
                    next=as_int(nexts.get(key)),
                    total=as_int(totals.get(key)),
                    time=own_time if isinstance(own_time, Mapping) else None,
                )
            elif halted:
                not_run = Bitrix24ApiError(
                    "NOT_EXECUTED", "the batch stopped before this command (halt)", method=method
                )
                out[key] = BatchItem(key, method, error=not_run)
            else:
                missing = Bitrix24ResponseError(
                    "MISSING_IN_BATCH",
                    "the batch answer holds neither a result nor an error for this command",
                    status=200,
                    method=method,
                    retryable=True,
                )
                out[key] = BatchItem(key, method, error=missing)
        yield from blocks
        return out

    def list_flow(self, method: str, params: Mapping[str, Any] | None = None, limit: int | None = None) -> Flow:
        """
        Every row of a list method, following ``next`` (at most ``limit`` rows). Rows wrapped in an object
        (``{"tasks": [...]}``) are unwrapped. A ``next`` that does not move forward stops with an error instead of
        paging forever.
        """
        rows: list[Any] = []
        query = dict(params or {})
        start = as_int(query.get("start")) or 0
        while True:
            envelope = yield from self.call_flow(method, query)
            page = list_rows(envelope.result)
            rows.extend(page)
            if envelope.next is None or (limit is not None and len(rows) >= limit):
                return rows[:limit] if limit is not None else rows
            bound = envelope.total if envelope.total is not None and envelope.total > 0 else None
            absurd = envelope.next > start + _MAX_PAGE_STEP or (bound is not None and envelope.next > bound)
            if envelope.next <= start or absurd:
                raise Bitrix24ResponseError(
                    "INVALID_RESPONSE",
                    f"the list's next page starts at {envelope.next}, which does not move forward from {start}"
                    + (f" within the {bound} rows announced" if bound is not None else ""),
                    status=200,
                    method=method,
                )
            start = envelope.next
            query["start"] = start
