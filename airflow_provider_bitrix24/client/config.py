"""
Portal settings: where the portal is, how to authenticate, and how hard the client may push it.

:func:`parse_connection` turns the fields of an Airflow-style connection (host, login, password, extra) into a
:class:`PortalConfig`, and refuses anything malformed with a :class:`Bitrix24ConfigError` that names the field,
before any socket is opened. It accepts three forms:

* the inbound-webhook URL exactly as Bitrix24 shows it, in ``host``
  (``https://portal.bitrix24.com/rest/1/abc123/``), with login and password empty;
* the portal URL in ``host``, the user id in ``login`` and the webhook code in ``password``;
* an OAuth application: the portal URL in ``host`` and ``auth_type="oauth"`` with ``client_id``,
  ``client_secret`` and ``refresh_token`` (optionally ``access_token``, ``expires_at``, ``oauth_url``) in extra.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from airflow_provider_bitrix24.client.errors import Bitrix24ConfigError

DEFAULT_OAUTH_URL: Final = "https://oauth.bitrix.info/oauth/token/"
#: The portal cuts a request at 60 s; the client waits a little longer so that the portal's answer wins.
DEFAULT_TIMEOUT: Final = 75.0
DEFAULT_MAX_RETRIES: Final = 5
#: Answers larger than this are refused (a list page or a 50-command batch is far smaller).
DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024

_WEBHOOK_PATH = re.compile(r"^/rest/(?P<user>[^/]+)/(?P<code>[^/]+)/?$")
_CODE_CHARS = re.compile(r"^[A-Za-z0-9_.\-]+$")
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


@dataclass(frozen=True)
class RateLimit:
    """The portal's leaky bucket: ``burst`` requests at once, then ``per_second`` sustained."""

    burst: int
    per_second: float


RATE_LIMIT_PRESETS: Final[dict[str, RateLimit]] = {
    "standard": RateLimit(burst=50, per_second=2.0),
    "enterprise": RateLimit(burst=250, per_second=5.0),
}


@dataclass(frozen=True, repr=False)
class WebhookAuth:
    """Inbound-webhook credential: the path ``/rest/<user_id>/<code>/`` carries the secret."""

    user_id: int
    code: str

    def __repr__(self) -> str:
        return f"WebhookAuth(user_id={self.user_id}, code='***')"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.code,)


@dataclass(frozen=True, repr=False)
class OAuthCredentials:
    """OAuth application credential; the tokens rotate, see :mod:`airflow_provider_bitrix24.client.oauth`."""

    client_id: str
    client_secret: str
    refresh_token: str
    access_token: str | None = None
    expires_at: float | None = None
    oauth_url: str = DEFAULT_OAUTH_URL

    def __repr__(self) -> str:
        return f"OAuthCredentials(client_id={self.client_id!r}, client_secret='***', tokens='***')"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.client_secret, self.refresh_token, self.access_token) if s)


@dataclass(frozen=True, repr=False)
class PortalConfig:
    """
    Everything the client needs to talk to one portal.

    :param base_url: Scheme, host and optional port of the portal, without a trailing slash.
    :param auth: The webhook or OAuth credential.
    :param timeout: Seconds to wait for an answer.
    :param verify: TLS verification: a bool or the path of a CA bundle.
    :param max_retries: How many times a transient failure is retried.
    :param rate_limit: The portal's leaky bucket the client paces itself to.
    """

    base_url: str
    auth: WebhookAuth | OAuthCredentials
    timeout: float = DEFAULT_TIMEOUT
    verify: bool | str = True
    max_retries: int = DEFAULT_MAX_RETRIES
    rate_limit: RateLimit = field(default_factory=lambda: RATE_LIMIT_PRESETS["standard"])
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __repr__(self) -> str:
        return f"PortalConfig(base_url={self.base_url!r}, auth={self.auth!r}, rate_limit={self.rate_limit!r})"

    @property
    def portal_key(self) -> str:
        """Identity of the portal for sharing rate limits: scheme-less host and port."""
        return urlsplit(self.base_url).netloc.lower()


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    name = hostname.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_base_url(value: str, field_name: str = "host", *, port: int | None = None) -> tuple[str, str]:
    """
    Validate a portal or endpoint URL and split it into ``(base_url, path)``.

    The scheme is optional (``https`` assumed); ``http`` is accepted only for loopback hosts.
    """
    raw = value.strip()
    if not raw:
        raise Bitrix24ConfigError(field_name, "is empty; expected the portal URL, e.g. https://portal.bitrix24.com")
    if "://" not in raw:
        raw = "https://" + raw
    try:
        parts = urlsplit(raw)
        url_port = parts.port
    except ValueError as exc:
        raise Bitrix24ConfigError(field_name, f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    hostname = parts.hostname or ""
    if scheme not in {"http", "https"}:
        raise Bitrix24ConfigError(field_name, f"has scheme {scheme!r}; only https (or http on loopback) is allowed")
    if not hostname:
        raise Bitrix24ConfigError(field_name, "has no host name")
    if parts.username or parts.password:
        raise Bitrix24ConfigError(field_name, "must not contain user:password@; put the webhook code in password")
    if parts.query or parts.fragment:
        raise Bitrix24ConfigError(field_name, "must not contain a query string or fragment")
    if scheme == "http" and not is_loopback(hostname):
        raise Bitrix24ConfigError(
            field_name,
            f"uses plain http for {hostname!r}; Bitrix24 requires https (http is accepted only for loopback hosts)",
        )
    if port is not None and url_port is not None and port != url_port:
        raise Bitrix24ConfigError("port", f"{port} disagrees with the port {url_port} given in host")
    netloc = parts.netloc.lower()
    if port is not None and url_port is None:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}", parts.path


def _extra_get(extra: Mapping[str, Any], name: str) -> Any:
    """Read an extra by its plain name, falling back to the pre-2.3 ``extra__bitrix24__<name>`` form."""
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__bitrix24__{name}")
    return None if value == "" else value


def _as_positive_int(value: Any, field_name: str) -> int:
    if isinstance(value, bool):
        raise Bitrix24ConfigError(field_name, f"must be a positive integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise Bitrix24ConfigError(field_name, f"must be a positive integer, got {value!r}")
    if number <= 0:
        raise Bitrix24ConfigError(field_name, f"must be a positive integer, got {value!r}")
    return number


def _as_number(value: Any, field_name: str, *, minimum: float, allow_equal: bool) -> float:
    if isinstance(value, bool):
        raise Bitrix24ConfigError(field_name, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Bitrix24ConfigError(field_name, f"must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < minimum or (number == minimum and not allow_equal):
        bound = ">=" if allow_equal else ">"
        raise Bitrix24ConfigError(field_name, f"must be a number {bound} {minimum:g}, got {value!r}")
    return number


def _parse_verify(value: Any) -> bool | str:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        if value.strip():
            return value.strip()
    raise Bitrix24ConfigError("extra.verify", f"must be true, false or the path of a CA bundle, got {value!r}")


def _parse_rate_limit(value: Any) -> RateLimit:
    if value is None:
        return RATE_LIMIT_PRESETS["standard"]
    if isinstance(value, str):
        preset = RATE_LIMIT_PRESETS.get(value.strip().lower())
        if preset is None:
            names = ", ".join(sorted(RATE_LIMIT_PRESETS))
            raise Bitrix24ConfigError(
                "extra.rate_limit",
                f"unknown preset {value!r}; use {names} or {{'burst': N, 'per_second': R}}",
            )
        return preset
    if isinstance(value, Mapping):
        unknown = set(value) - {"burst", "per_second"}
        if unknown:
            raise Bitrix24ConfigError("extra.rate_limit", f"unknown keys {sorted(unknown)}; use burst and per_second")
        if "burst" not in value or "per_second" not in value:
            raise Bitrix24ConfigError("extra.rate_limit", "needs both burst and per_second")
        burst = _as_positive_int(value["burst"], "extra.rate_limit.burst")
        rate = _as_number(value["per_second"], "extra.rate_limit.per_second", minimum=0.0, allow_equal=False)
        return RateLimit(burst=burst, per_second=rate)
    raise Bitrix24ConfigError("extra.rate_limit", f"must be a preset name or a mapping, got {type(value).__name__}")


def _parse_webhook_code(code: str, field_name: str) -> str:
    if not code:
        raise Bitrix24ConfigError(field_name, "is empty; expected the webhook code")
    if not _CODE_CHARS.match(code):
        # Never echo the value: it is a secret.
        raise Bitrix24ConfigError(field_name, "contains characters a webhook code never has (/, spaces, ...)")
    return code


def _parse_oauth(extra: Mapping[str, Any]) -> OAuthCredentials:
    values: dict[str, str] = {}
    for name in ("client_id", "client_secret", "refresh_token"):
        value = _extra_get(extra, name)
        if not isinstance(value, str) or not value.strip():
            raise Bitrix24ConfigError(f"extra.{name}", "is required for auth_type 'oauth' and must be a string")
        values[name] = value.strip()
    access = _extra_get(extra, "access_token")
    if access is not None and not isinstance(access, str):
        raise Bitrix24ConfigError("extra.access_token", "must be a string")
    expires_raw = _extra_get(extra, "expires_at")
    expires = (
        None if expires_raw is None else _as_number(expires_raw, "extra.expires_at", minimum=0.0, allow_equal=True)
    )
    oauth_url_raw = _extra_get(extra, "oauth_url") or DEFAULT_OAUTH_URL
    if not isinstance(oauth_url_raw, str):
        raise Bitrix24ConfigError("extra.oauth_url", "must be a URL string")
    base, path = parse_base_url(oauth_url_raw, "extra.oauth_url")
    return OAuthCredentials(
        client_id=values["client_id"],
        client_secret=values["client_secret"],
        refresh_token=values["refresh_token"],
        access_token=access or None,
        expires_at=expires,
        oauth_url=base + (path or "/oauth/token/"),
    )


def parse_connection(
    *,
    host: str | None,
    login: str | None = None,
    password: str | None = None,
    port: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> PortalConfig:
    """
    Build a :class:`PortalConfig` from connection fields, or raise :class:`Bitrix24ConfigError`.

    :param host: Portal URL, or the full inbound-webhook URL.
    :param login: Webhook user id (split webhook form only).
    :param password: Webhook code (split webhook form only).
    :param port: Optional port, when not written in ``host``.
    :param extra: ``auth_type``, OAuth fields, ``timeout``, ``verify``, ``max_retries``, ``rate_limit``.
    """
    extra = extra or {}
    if not isinstance(extra, Mapping):
        raise Bitrix24ConfigError("extra", "must be a JSON object")
    base_url, path = parse_base_url(host or "", "host", port=port)

    auth_type = _extra_get(extra, "auth_type") or "webhook"
    if not isinstance(auth_type, str) or auth_type.strip().lower() not in {"webhook", "oauth"}:
        raise Bitrix24ConfigError("extra.auth_type", f"must be 'webhook' or 'oauth', got {auth_type!r}")
    auth_type = auth_type.strip().lower()

    auth: WebhookAuth | OAuthCredentials
    webhook_path = _WEBHOOK_PATH.match(path)
    if auth_type == "oauth":
        if webhook_path:
            raise Bitrix24ConfigError("host", "is a webhook URL, but extra.auth_type is 'oauth'; give the portal URL")
        if login or password:
            raise Bitrix24ConfigError("login/password", "must be empty for auth_type 'oauth'; OAuth fields go in extra")
        auth = _parse_oauth(extra)
    elif webhook_path:
        if login or password:
            raise Bitrix24ConfigError(
                "login/password",
                "must be empty when host is the full webhook URL (it already holds user and code)",
            )
        user_id = _as_positive_int(webhook_path["user"], "host (webhook user id)")
        auth = WebhookAuth(user_id=user_id, code=_parse_webhook_code(webhook_path["code"], "host (webhook code)"))
    else:
        if path.rstrip("/") not in {"", "/rest"}:
            raise Bitrix24ConfigError(
                "host",
                "has a path that is not a webhook URL; expected https://PORTAL or https://PORTAL/rest/<user>/<code>/",
            )
        if not login and not password:
            raise Bitrix24ConfigError(
                "password",
                "is empty: give the webhook URL in host, or the user id in login and the webhook code in password, "
                "or set extra.auth_type to 'oauth'",
            )
        if not login:
            raise Bitrix24ConfigError("login", "is empty; expected the id of the user who created the webhook")
        user_id = _as_positive_int(login.strip(), "login")
        auth = WebhookAuth(user_id=user_id, code=_parse_webhook_code((password or "").strip(), "password"))

    timeout_raw = _extra_get(extra, "timeout")
    timeout = (
        DEFAULT_TIMEOUT
        if timeout_raw is None
        else _as_number(timeout_raw, "extra.timeout", minimum=0, allow_equal=False)
    )
    retries_raw = _extra_get(extra, "max_retries")
    if retries_raw is None:
        max_retries = DEFAULT_MAX_RETRIES
    elif not isinstance(retries_raw, bool) and str(retries_raw).strip() == "0":
        max_retries = 0
    else:
        try:
            max_retries = _as_positive_int(retries_raw, "extra.max_retries")
        except Bitrix24ConfigError:
            raise Bitrix24ConfigError(
                "extra.max_retries", f"must be a non-negative integer, got {retries_raw!r}"
            ) from None
    return PortalConfig(
        base_url=base_url,
        auth=auth,
        timeout=timeout,
        verify=_parse_verify(_extra_get(extra, "verify")),
        max_retries=max_retries,
        rate_limit=_parse_rate_limit(_extra_get(extra, "rate_limit")),
    )
