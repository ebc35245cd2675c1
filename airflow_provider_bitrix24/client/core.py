"""
The call engine: one implementation of a REST call for the sync and the async client, with no I/O.

A call is written once, as a generator (a *flow*) that yields what it needs done: :class:`Acquire` a slot from the
portal's limits, :class:`Sleep`, :class:`Send` an HTTP request, :class:`Report` what the portal said about its
limits, or :class:`Refresh` the OAuth token. The sync client performs those with ``requests``, threads and
``time.sleep``, the async client with ``httpx`` and ``asyncio``. Pacing, retries, operating-limit waits, OAuth
refresh, batching and paging live here, so both clients behave the same by construction; the wire format is
:mod:`.wire`, the redirect policy :mod:`.redirects`, the back-off :mod:`.retry`, and the HTTP libraries' failures
are mapped in :mod:`.transport`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from airflow_provider_bitrix24.client.coerce import as_int
from airflow_provider_bitrix24.client.config import OAuthCredentials, PortalConfig, WebhookAuth
from airflow_provider_bitrix24.client.errors import (
    Bitrix24ApiError,
    Bitrix24Error,
    Bitrix24OperationTimeLimitError,
    Bitrix24ResponseError,
    Bitrix24TokenExpiredError,
)
from airflow_provider_bitrix24.client.limits import OPERATING_LIMIT, UNKNOWN_BLOCK, Grant, Limiter, local_limiter
from airflow_provider_bitrix24.client.oauth import OAuthSession, TokenStore, shared_oauth_session
from airflow_provider_bitrix24.client.redaction import install_log_filter, register_secret
from airflow_provider_bitrix24.client.redirects import CLOUD_DOMAINS, follow, redirect_target
from airflow_provider_bitrix24.client.retry import RetryPolicy, fills_bucket
from airflow_provider_bitrix24.client.wire import (
    BATCH_LIMIT,
    USER_AGENT,
    BatchItem,
    Command,
    Envelope,
    HttpRequest,
    HttpResponse,
    check_method,
    decode_batch,
    decode_json,
    encode_batch,
    list_rows,
    parse_response,
    php_query,
)

__all__ = [
    "BATCH_LIMIT",
    "CLOUD_DOMAINS",
    "USER_AGENT",
    "Acquire",
    "Action",
    "BatchItem",
    "Command",
    "Engine",
    "Envelope",
    "Flow",
    "HttpRequest",
    "HttpResponse",
    "Refresh",
    "Report",
    "Send",
    "Sleep",
    "Stopped",
    "SyncTokens",
    "decode_json",
    "list_rows",
    "parse_response",
    "php_query",
    "redirect_target",
]

#: While a method is blocked, how often the wait looks for an announced end (local memory only, no request).
_BLOCK_CHECK: Final = 1.0
#: A list's ``next`` never moves further than this past the current page's start (pages hold 50 rows).
_MAX_PAGE_STEP: Final = 1000

log = logging.getLogger("airflow_provider_bitrix24.client")


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
        check_method(method)
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
        """Move to the portal's new address after a rename, when :func:`.redirects.follow` allows it."""
        target = follow(self.base_url, response, method, redirects)
        if target is None:
            return False
        self.log.warning("Bitrix24 portal moved from %s to %s; following", self.base_url, target)
        self.base_url = target
        return True

    def time_until_unblocked(self, method: str) -> float | None:
        """Seconds until ``method``, refused by the operating-time limit, may be called again; ``None`` if it may now."""
        until = self.limiter.blocked_until(method)
        return None if until is None else max(0.0, until - time.time())

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
                if fills_bucket(err):
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
        envelope = yield from self.call_flow("batch", encode_batch(chunk, halt=halt), should_stop=should_stop)
        out, blocks = decode_batch(envelope, chunk, halt=halt, limiter=self.limiter, unknown_block=UNKNOWN_BLOCK)
        for method, until in blocks:
            yield Report("blocked", method, until)
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
