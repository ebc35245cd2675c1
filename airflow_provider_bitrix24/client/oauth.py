"""
OAuth tokens that refresh and rotate by themselves.

Bitrix24 access tokens live one hour, and every refresh returns a **new** refresh token while the old one stops
working. So the current pair must be shared by everything in the process that uses the same application on the
same portal, refreshed once when the portal says ``expired_token`` (never on a timer), and persisted where the
next process will find it (a :class:`TokenStore`; in Airflow, a Variable).

Refreshes are serialised per application and portal with a lock: when eight threads hit ``expired_token`` at
once, one refreshes and the other seven see that the token they failed with is no longer current, and reuse the
new one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_bitrix24.client.config import OAuthCredentials
from airflow_provider_bitrix24.client.errors import (
    Bitrix24AuthError,
    Bitrix24ResponseError,
    error_from_payload,
)
from airflow_provider_bitrix24.client.redaction import register_secret

TOKEN_METHOD = "oauth/token"


@dataclass(frozen=True, repr=False)
class TokenPair:
    """An access token, the refresh token that comes with it, and when the access token expires."""

    access_token: str | None
    refresh_token: str
    expires_at: float | None = None

    def __repr__(self) -> str:
        return f"TokenPair(access_token='***', refresh_token='***', expires_at={self.expires_at!r})"

    def to_json(self) -> str:
        return json.dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TokenPair | None:
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str):
            return None
        access = data.get("access_token")
        expires = data.get("expires_at")
        return cls(
            access_token=access if isinstance(access, str) else None,
            refresh_token=data["refresh_token"],
            expires_at=float(expires) if isinstance(expires, int | float) else None,
        )


class TokenStore(Protocol):
    """Where rotated tokens are kept between processes."""

    def load(self) -> TokenPair | None: ...

    def save(self, pair: TokenPair) -> None: ...


#: Performs ``GET url?params`` and returns ``(status, body)``; raises a transport error when no answer comes.
Fetch = Callable[[str, dict[str, str]], tuple[int, bytes]]


class OAuthSession:
    """The live token pair of one application on one portal, shared within the process."""

    def __init__(
        self,
        credentials: OAuthCredentials,
        store: TokenStore | None = None,
        on_new_secret: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = credentials
        self.store = store
        self.on_new_secret = on_new_secret
        self.refresh_count = 0
        self._clock = clock
        self._lock = threading.Lock()
        for secret in credentials.secrets:
            self._note_secret(secret)
        stored = store.load() if store else None
        self._pair = stored or TokenPair(credentials.access_token, credentials.refresh_token, credentials.expires_at)
        if stored:
            self._note_pair(stored)

    def __repr__(self) -> str:
        return f"OAuthSession(client_id={self.credentials.client_id!r}, tokens='***')"

    @property
    def access_token(self) -> str | None:
        with self._lock:
            return self._pair.access_token

    def _note_secret(self, secret: str | None) -> None:
        if secret:
            register_secret(secret)
            if self.on_new_secret:
                self.on_new_secret(secret)

    def _note_pair(self, pair: TokenPair) -> None:
        self._note_secret(pair.access_token)
        self._note_secret(pair.refresh_token)

    def refresh(self, failed_token: str | None, fetch: Fetch) -> None:
        """
        Make sure the current access token is not ``failed_token``: refresh it, unless another thread or
        process already did.
        """
        with self._lock:
            if self._pair.access_token and self._pair.access_token != failed_token:
                return
            stored = self.store.load() if self.store else None
            if stored and stored.refresh_token != self._pair.refresh_token:
                # Another process rotated the pair: adopt it, and use it as is if its token is a different one.
                self._note_pair(stored)
                self._pair = stored
                if stored.access_token and stored.access_token != failed_token:
                    return
            try:
                pair = self._request(self._pair.refresh_token, fetch)
            except Bitrix24AuthError as err:
                # A concurrent process may have used (and so invalidated) our refresh token a moment ago.
                latest = self.store.load() if self.store and err.code == "invalid_grant" else None
                if latest is None or latest.refresh_token == self._pair.refresh_token:
                    raise
                self._note_pair(latest)
                self._pair = latest
                if latest.access_token and latest.access_token != failed_token:
                    return
                pair = self._request(latest.refresh_token, fetch)
            self._note_pair(pair)
            # Persist before use: the old refresh token no longer works.
            if self.store:
                self.store.save(pair)
            self._pair = pair
            self.refresh_count += 1

    def _request(self, refresh_token: str, fetch: Fetch) -> TokenPair:
        creds = self.credentials
        params = {
            "grant_type": "refresh_token",
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
            "refresh_token": refresh_token,
        }
        status, body = fetch(creds.oauth_url, params)
        try:
            data: Any = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict):
            raise Bitrix24ResponseError(
                "INVALID_RESPONSE",
                f"the OAuth server answered with something that is not JSON ({len(body)} bytes)",
                status=status,
                method=TOKEN_METHOD,
            )
        if "error" in data:
            raise error_from_payload(
                str(data["error"]),
                str(data.get("error_description") or ""),
                status=status,
                method=TOKEN_METHOD,
            )
        access, refresh = data.get("access_token"), data.get("refresh_token")
        if not isinstance(access, str) or not isinstance(refresh, str) or status != 200:
            raise Bitrix24ResponseError(
                "INVALID_RESPONSE",
                "the OAuth server's answer has no access_token/refresh_token",
                status=status,
                method=TOKEN_METHOD,
            )
        expires: float | None
        if isinstance(data.get("expires"), int | float):
            expires = float(data["expires"])
        elif isinstance(data.get("expires_in"), int | float):
            expires = self._clock() + float(data["expires_in"])
        else:
            expires = None
        return TokenPair(access_token=access, refresh_token=refresh, expires_at=expires)


_sessions: dict[tuple[str, str], OAuthSession] = {}
_sessions_lock = threading.Lock()


def shared_oauth_session(
    portal_key: str,
    credentials: OAuthCredentials,
    store: TokenStore | None = None,
    on_new_secret: Callable[[str], None] | None = None,
) -> OAuthSession:
    """Return the process-wide :class:`OAuthSession` of an application on a portal."""
    key = (portal_key, credentials.client_id)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None or session.credentials.client_secret != credentials.client_secret:
            session = _sessions[key] = OAuthSession(credentials, store, on_new_secret)
        return session


def forget_oauth_sessions() -> None:
    """Drop every shared session (tests, or after credentials were replaced)."""
    with _sessions_lock:
        _sessions.clear()
