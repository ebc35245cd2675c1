"""
The OAuth side of the sandbox: token storage and the token endpoint ``/oauth/token/``.

Access tokens live ``access_token_ttl`` seconds. Every grant issues a new access token and a new refresh token
(70 characters of lower-case hex, like real ones); a refresh token works once (it is invalidated the moment it is
used), an authorization code works once within ``auth_code_ttl`` seconds.

Answers follow what the real authorization server (``oauth.bitrix.info``) sends: a refresh carries
``scope: "app"``, ``domain: "oauth.bitrix.info"``, ``server_endpoint``, ``client_endpoint`` (this portal's
``/rest/``), ``member_id``, ``status``, ``user_id``, ``expires`` and ``expires_in``. Errors: ``invalid_request``
(400) for missing parameters, ``{"error": "wrong_client"}`` **with HTTP 200** for an unknown client id,
``invalid_client`` (400) for a wrong client secret, ``invalid_grant`` (400) for an unknown, used or expired code or
refresh token, ``PAYMENT_REQUIRED`` (402) when the config says so. ``wrong_client``, ``invalid_client`` and
``invalid_grant`` come without an ``error_description``, as the real server's answers recorded by the official SDKs
do; the others carry one.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from airflow_provider_bitrix24.sandbox.config import SandboxConfig

TOKEN_PATH = "/oauth/token/"
#: The authorization server's own domain and REST endpoint, as every token answer names them.
SERVER_DOMAIN = "oauth.bitrix.info"
SERVER_ENDPOINT = "https://oauth.bitrix.info/rest/"
#: Length of issued tokens and authorization codes (real ones are 70 characters).
TOKEN_LENGTH = 70


@dataclass
class AccessToken:
    issued: float
    user_id: int
    expired: bool = False


@dataclass(frozen=True)
class TokenCheck:
    """Outcome of looking up an access token: ``ok``, ``unknown`` or ``expired``."""

    status: str
    user_id: int = 0


class OAuthError(Exception):
    """An answer of the token endpoint that issues nothing; ``description`` ``None`` leaves it out of the body."""

    def __init__(self, status: int, code: str, description: str | None = None) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        if self.description is None:
            return {"error": self.code}
        return {"error": self.code, "error_description": self.description}


class OAuthServer:
    """Tokens of the sandbox's OAuth application and the logic of the token endpoint."""

    def __init__(self, config: SandboxConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, float] = {}
        self._codes: dict[str, float] = {}
        self.reset()

    def set_config(self, config: SandboxConfig) -> None:
        self._config = config

    def reset(self) -> None:
        """Forget every token; only the initial pair of the config is valid again (freshly issued)."""
        config = self._config
        with self._lock:
            now = time.time()
            self._access = {config.oauth_access_token: AccessToken(now, config.oauth_user_id)}
            self._refresh = {config.oauth_refresh_token: now}
            self._codes = {}

    def issue_pair(self, *, expired: bool = False) -> dict[str, Any]:
        """A new valid access + refresh token pair (the access token already expired if asked)."""
        config = self._config
        with self._lock:
            now = time.time()
            access, refresh = _token(), _token()
            self._access[access] = AccessToken(now, config.oauth_user_id, expired=expired)
            self._refresh[refresh] = now
            expires = int(now) if expired else int(now + config.access_token_ttl)
        return {"access_token": access, "refresh_token": refresh, "expires": expires}

    def issue_code(self) -> str:
        """A new authorization code, valid once within ``auth_code_ttl`` seconds."""
        code = _token()
        with self._lock:
            self._codes[code] = time.time()
        return code

    def expire_all(self) -> None:
        """Make every access token issued so far answer ``expired_token``."""
        with self._lock:
            for token in self._access.values():
                token.expired = True

    def check(self, token: str) -> TokenCheck:
        with self._lock:
            found = self._access.get(token)
            if found is None:
                return TokenCheck("unknown")
            if found.expired or time.time() - found.issued >= self._config.access_token_ttl:
                return TokenCheck("expired", found.user_id)
            return TokenCheck("ok", found.user_id)

    def grant(self, params: dict[str, Any], client_endpoint: str) -> dict[str, Any]:
        """
        Answer a token request.

        :raises OAuthError: with the status and body the endpoint must send.
        """
        config = self._config
        if config.payment_required:
            raise OAuthError(402, "PAYMENT_REQUIRED", "Payment required")
        grant_type = str(params.get("grant_type") or "")
        client_id = str(params.get("client_id") or "")
        client_secret = str(params.get("client_secret") or "")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "The grant type was not specified in the request")
        if grant_type not in ("refresh_token", "authorization_code"):
            raise OAuthError(400, "invalid_request", "The grant type is not supported")
        if not client_id or not client_secret:
            raise OAuthError(400, "invalid_request", "No client id or client secret supplied")
        if client_id != config.oauth_client_id:
            raise OAuthError(200, "wrong_client")
        if not secrets.compare_digest(client_secret.encode(), config.oauth_client_secret.encode()):
            raise OAuthError(400, "invalid_client")
        now = time.time()
        with self._lock:
            if grant_type == "refresh_token":
                old = str(params.get("refresh_token") or "")
                if not old:
                    raise OAuthError(400, "invalid_request", "No refresh token supplied")
                issued = self._refresh.pop(old, None)
                if issued is None or now - issued >= config.refresh_token_ttl:
                    raise OAuthError(400, "invalid_grant")
            else:
                code = str(params.get("code") or "")
                if not code:
                    raise OAuthError(400, "invalid_request", "No authorization code supplied")
                issued = self._codes.pop(code, None)
                if issued is None or now - issued >= config.auth_code_ttl:
                    raise OAuthError(400, "invalid_grant")
            access, refresh = _token(), _token()
            self._access[access] = AccessToken(now, config.oauth_user_id)
            self._refresh[refresh] = now
        answer: dict[str, Any] = {
            "access_token": access,
            "client_endpoint": client_endpoint,
            "domain": SERVER_DOMAIN,
            "expires": int(now + config.access_token_ttl),
            "expires_in": int(config.access_token_ttl),
            "member_id": config.member_id,
            "refresh_token": refresh,
            "scope": "app",
            "server_endpoint": SERVER_ENDPOINT,
            "status": "L",
            "user_id": config.oauth_user_id,
        }
        if grant_type == "authorization_code":
            del answer["expires"], answer["user_id"]
            answer["scope"] = ",".join(config.oauth_scopes)
        return answer


def _token() -> str:
    return secrets.token_hex(TOKEN_LENGTH // 2)
