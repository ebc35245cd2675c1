"""
OAuth tokens that refresh and rotate by themselves.

Bitrix24 access tokens live one hour, and every refresh returns a **new** refresh token while the old one stops
working. So a chain of tokens (one application, one portal, one initial refresh token) must be refreshed once when
the portal says ``expired_token`` (never on a timer), and every new pair persisted, before it is used, where every
other process of the deployment finds it (a :class:`TokenStore`; in Airflow, a Variable).

:class:`OAuthSession` holds the current pair of one chain in this process. The pair is an immutable
:class:`TokenPair` replaced whole by assignment, so readers (every request being built, on any thread or event
loop) never take a lock. The refresh itself is a sans-IO flow (:meth:`OAuthSession.refresh_flow`) that the sync and
async clients drive, each under its own kind of lock: a thread lock for threads, an ``asyncio.Lock`` per event
loop for coroutines (the event loop never waits on a thread lock), plus a lock shared by every process when the
connection names one (Redis). Losing a race with another process is survivable: the loser sees ``invalid_grant``,
waits a bounded time for the winner's pair to appear in the store, and adopts it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from airflow_provider_bitrix24.client.coerce import as_seconds
from airflow_provider_bitrix24.client.config import OAuthCredentials
from airflow_provider_bitrix24.client.errors import (
    Bitrix24AuthError,
    Bitrix24Error,
    Bitrix24ResponseError,
    Bitrix24TokenStoreError,
    error_from_payload,
)
from airflow_provider_bitrix24.client.redaction import register_secret

TOKEN_METHOD: Final = "oauth/token"
#: How long a process that lost a refresh race waits for the winner's pair to appear in the store.
RACE_WAIT: Final = 10.0
RACE_POLL: Final = 0.5
#: Attempts to store a rotated pair before the refresh fails loudly.
SAVE_ATTEMPTS: Final = 3


@dataclass(frozen=True, repr=False)
class TokenPair:
    """
    An access token, the refresh token that comes with it, and when they were issued and expire.

    :param refreshed_at: Unix time of the refresh that produced the pair; ``None`` for the connection's own pair.
    """

    access_token: str | None
    refresh_token: str
    expires_at: float | None = None
    refreshed_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"TokenPair(access_token='***', refresh_token='***', expires_at={self.expires_at!r}, "
            f"refreshed_at={self.refreshed_at!r})"
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at,
                "refreshed_at": self.refreshed_at,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TokenPair | None:
        try:
            data = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str) or not data["refresh_token"]:
            return None
        access = data.get("access_token")
        return cls(
            access_token=access if isinstance(access, str) and access else None,
            refresh_token=data["refresh_token"],
            expires_at=as_seconds(data.get("expires_at")),
            refreshed_at=as_seconds(data.get("refreshed_at")),
        )

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.access_token, self.refresh_token) if s)


class TokenStore(Protocol):
    """
    Where rotated tokens are kept between processes.

    ``save`` raises when the pair could not be stored. ``aload``/``asave`` are the event-loop twins; a store
    without a native async API runs the plain ones in a thread.
    """

    key: str

    def load(self) -> TokenPair | None: ...

    def save(self, pair: TokenPair) -> None: ...

    async def aload(self) -> TokenPair | None: ...

    async def asave(self, pair: TokenPair) -> None: ...


class MemoryTokenStore:
    """A :class:`TokenStore` in this process only (scripts, tests)."""

    def __init__(self, key: str = "memory") -> None:
        self.key = key
        self.pair: TokenPair | None = None

    def load(self) -> TokenPair | None:
        return self.pair

    def save(self, pair: TokenPair) -> None:
        self.pair = pair

    async def aload(self) -> TokenPair | None:
        return self.load()

    async def asave(self, pair: TokenPair) -> None:
        self.save(pair)


def chain_id(portal_key: str, credentials: OAuthCredentials) -> str:
    """
    The identity of one token chain: the portal, the application and the refresh token it started from.

    It does not depend on which connection id names the chain, so that testing a connection (which Airflow does
    under a random connection id) finds and updates the same stored pair as the tasks; a new refresh token put into
    the connection starts a new chain. A digest, never the token.
    """
    origin = f"{portal_key}\n{credentials.client_id}\n{credentials.refresh_token}"
    return hashlib.sha256(origin.encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- actions of the refresh flow


@dataclass(frozen=True)
class TokenRequest:
    """``GET url?params`` to the OAuth server; the params hold the client secret and the refresh token."""

    url: str
    params: dict[str, str] = field(repr=False)


@dataclass(frozen=True)
class TokenAnswer:
    """The OAuth server's answer; its body holds the new tokens."""

    status: int
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class LoadTokens:
    """
    Read the chain's stored pair; the answer is a :class:`TokenPair` or ``None``. ``previous``: read where an
    earlier version of the store kept it instead (stores without such a place answer ``None``).
    """

    previous: bool = False


@dataclass(frozen=True, repr=False)
class SaveTokens:
    """Store a new pair; the driver raises :class:`Bitrix24TokenStoreError` when it cannot."""

    pair: TokenPair


@dataclass(frozen=True, repr=False)
class NewSecrets:
    """Secrets just learned; the driver hands them to the log masker (Airflow's ``mask_secret``)."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    seconds: float


RefreshAction = TokenRequest | LoadTokens | SaveTokens | NewSecrets | Wait
RefreshFlow = Generator[RefreshAction, Any, None]


class OAuthSession:
    """
    The live token pair of one chain in this process.

    :param credentials: The connection's application and initial pair.
    :param chain: The chain's identity (:func:`chain_id`), also the name of its locks.
    """

    def __init__(self, credentials: OAuthCredentials, chain: str, clock: Callable[[], float] = time.time) -> None:
        self.credentials = credentials
        self.chain = chain
        self.refresh_count = 0
        self._clock = clock
        #: Serialises refreshes by threads; never taken by an event loop.
        self.thread_lock = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._loop_locks_guard = threading.Lock()
        for secret in credentials.secrets:
            register_secret(secret)
        self.pair = TokenPair(credentials.access_token, credentials.refresh_token, credentials.expires_at)

    def __repr__(self) -> str:
        return f"OAuthSession(client_id={self.credentials.client_id!r}, chain={self.chain!r}, tokens='***')"

    @property
    def access_token(self) -> str | None:
        return self.pair.access_token

    def loop_lock(self) -> asyncio.Lock:
        """The lock that serialises refreshes by coroutines of the running event loop."""
        loop = asyncio.get_running_loop()
        with self._loop_locks_guard:  # a dict lookup, never held across I/O
            lock = self._loop_locks.get(loop)
            if lock is None:
                lock = self._loop_locks[loop] = asyncio.Lock()
            return lock

    def _newer(self, stored: TokenPair | None) -> bool:
        current = self.pair
        if stored is None or stored.refresh_token == current.refresh_token:
            return False
        return (stored.refreshed_at or 0.0) >= (current.refreshed_at or 0.0)

    def _adopt(self, stored: TokenPair) -> Generator[RefreshAction, Any, None]:
        for secret in stored.secrets():
            register_secret(secret)
        yield NewSecrets(stored.secrets())
        self.pair = stored

    def sync_flow(self) -> RefreshFlow:
        """Adopt the stored pair when another process rotated the chain since this process last looked."""
        stored = yield LoadTokens()
        if self._newer(stored):
            assert stored is not None
            yield from self._adopt(stored)

    def refresh_flow(self, failed_token: str | None) -> RefreshFlow:
        """
        Make sure the current access token is not ``failed_token``: refresh the chain, unless another thread,
        task or process already did. Run it under the session's lock for the caller's kind (thread or loop) and
        the deployment-wide lock when there is one.
        """
        if self.pair.access_token and self.pair.access_token != failed_token:
            return  # refreshed meanwhile in this process
        stored = yield LoadTokens()
        if self._newer(stored):
            assert stored is not None
            yield from self._adopt(stored)
            if stored.access_token and stored.access_token != failed_token:
                return  # another process refreshed; its token is fresh
        spent = self.pair
        try:
            fresh = yield from self._request(spent.refresh_token)
        except Bitrix24AuthError as err:
            if err.code != "invalid_grant":
                raise
            recovered = yield from self._after_invalid_grant(spent, err)
            if recovered is None:
                return  # another process's pair was adopted
            fresh = recovered
        for secret in fresh.secrets():
            register_secret(secret)
        yield NewSecrets(fresh.secrets())
        # Persist before use: the old refresh token no longer works, for anyone.
        failure: Bitrix24Error | None = None
        for attempt in range(SAVE_ATTEMPTS):
            try:
                yield SaveTokens(fresh)
                failure = None
                break
            except Bitrix24TokenStoreError as exc:
                failure = exc
                if attempt + 1 < SAVE_ATTEMPTS:
                    yield Wait(0.5 * 2**attempt)
        # This process goes on with the new pair either way; the others need it stored.
        self.pair = fresh
        self.refresh_count += 1
        if failure is not None:
            raise failure

    def _after_invalid_grant(
        self, spent: TokenPair, err: Bitrix24AuthError
    ) -> Generator[RefreshAction, Any, TokenPair | None]:
        """
        The refresh token was refused. Either the chain went on where an earlier version of the store kept it
        (refresh with that pair), or another process used our token a moment ago (wait for its pair to be stored,
        and adopt it: ``None``). Only when neither happens is the chain broken.
        """
        previous = yield LoadTokens(previous=True)
        if previous is not None and previous.refresh_token != spent.refresh_token:
            try:
                return (yield from self._request(previous.refresh_token))
            except Bitrix24AuthError as again:
                if again.code != "invalid_grant":
                    raise
        waited = 0.0
        while waited < RACE_WAIT:
            yield Wait(RACE_POLL)
            waited += RACE_POLL
            if self.pair.refresh_token != spent.refresh_token:
                return None  # another thread or task of this process got there
            stored = yield LoadTokens()
            if stored is not None and stored.refresh_token != spent.refresh_token:
                yield from self._adopt(stored)
                return None
        raise Bitrix24AuthError(
            "invalid_grant",
            f"{err.description or 'the refresh token is not valid'}; no newer pair appeared in the token store "
            f"within {RACE_WAIT:g} s",
            status=err.status,
            method=TOKEN_METHOD,
        ) from None

    def _request(self, refresh_token: str) -> Generator[RefreshAction, Any, TokenPair]:
        creds = self.credentials
        params = {
            "grant_type": "refresh_token",
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
            "refresh_token": refresh_token,
        }
        answer: TokenAnswer = yield TokenRequest(creds.oauth_url, params)
        return parse_token_answer(answer.status, answer.body, self._clock())


def parse_token_answer(status: int, body: bytes, now: float) -> TokenPair:
    """The pair in an OAuth server's answer, or the error it names (``invalid_grant``, ``wrong_client``...)."""
    try:
        data: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            f"the OAuth server answered with something that is not a JSON object ({len(body)} bytes)",
            status=status,
            method=TOKEN_METHOD,
            retryable=not body.strip() or status >= 500,
        )
    if "error" in data:
        raise error_from_payload(
            str(data["error"]),
            str(data.get("error_description") or ""),
            status=status,
            method=TOKEN_METHOD,
        )
    access, refresh = data.get("access_token"), data.get("refresh_token")
    if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh or status != 200:
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            "the OAuth server's answer has no access_token/refresh_token",
            status=status,
            method=TOKEN_METHOD,
        )
    expires = as_seconds(data.get("expires"))
    if expires is None:
        lifetime = as_seconds(data.get("expires_in"))
        expires = now + lifetime if lifetime is not None else None
    return TokenPair(access_token=access, refresh_token=refresh, expires_at=expires, refreshed_at=now)


def token_store_error(key: str, exc: BaseException | None = None) -> Bitrix24TokenStoreError:
    """The loud failure when a rotated pair could not be stored: it names where the new refresh token is needed."""
    why = f" ({type(exc).__name__})" if exc is not None else ""
    return Bitrix24TokenStoreError(
        "TOKEN_NOT_STORED",
        f"the portal rotated the OAuth refresh token, but the new pair could not be stored in {key!r}{why}, where "
        "every other process of the deployment reads the chain; until it is stored they fail with invalid_grant. "
        "Make that store writable, or re-authorise the application and put the new refresh token in the "
        "connection's refresh_token field",
        method=TOKEN_METHOD,
    )


_sessions: dict[str, OAuthSession] = {}
_sessions_lock = threading.Lock()


def shared_oauth_session(portal_key: str, credentials: OAuthCredentials) -> OAuthSession:
    """
    Return the process-wide :class:`OAuthSession` of a chain.

    A new refresh token in the connection is a new chain, so a long-lived process (the triggerer) picks up new
    credentials at once; a changed secret or endpoint of the same chain is taken over by the existing session.
    """
    key = chain_id(portal_key, credentials)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = OAuthSession(credentials, key)
        elif session.credentials != credentials:
            for secret in credentials.secrets:
                register_secret(secret)
            session.credentials = replace(
                credentials,
                access_token=session.credentials.access_token,
                expires_at=session.credentials.expires_at,
            )
        return session


def forget_oauth_sessions() -> None:
    """Drop every shared session (tests, or after credentials were replaced)."""
    with _sessions_lock:
        _sessions.clear()
