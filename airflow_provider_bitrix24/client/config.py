"""
Portal settings: where the portal is, how to authenticate, and how hard the client may push it.

:func:`parse_connection` turns the fields of an Airflow-style connection (host, login, password, extra) into a
:class:`PortalConfig`, and refuses anything malformed with a :class:`Bitrix24ConfigError` that names the field,
before any socket is opened. The error names the field both as the connection form labels it and as it is
stored (``Webhook user ID (login)``), and never repeats a value that may be a secret. It accepts three forms:

* the portal URL in ``host``, the user id in ``login`` and the webhook code in ``password`` (the recommended
  form: Airflow masks the password field, but shows ``host`` in clear in its connections list);
* the inbound-webhook URL exactly as Bitrix24 shows it, in ``host``
  (``https://portal.bitrix24.com/rest/1/abc123/``), with login and password empty;
* an OAuth application: the portal URL in ``host`` and ``auth_type="oauth"`` with ``client_id``,
  ``client_secret`` and ``refresh_token`` (optionally ``access_token``, ``expires_at``, ``oauth_url``) in extra.
"""

from __future__ import annotations

import ast
import ipaddress
import json
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

#: How Airflow's connection form labels each stored field (the provider info uses the same labels).
FIELD_LABELS: Final[dict[str, str]] = {
    "host": "Portal or webhook URL",
    "login": "Webhook user ID",
    "password": "Webhook code",
    "login/password": "Webhook user ID / Webhook code",
    "port": "Port",
    "extra": "Extra Fields JSON",
    "extra.auth_type": "Auth type",
    "extra.client_id": "OAuth client ID",
    "extra.client_secret": "OAuth client secret",
    "extra.refresh_token": "OAuth refresh token",
    "extra.access_token": "OAuth access token",
    "extra.oauth_url": "OAuth token endpoint",
    "extra.rate_limit": "Rate limit",
    "extra.timeout": "Timeout (seconds)",
    "extra.max_retries": "Max retries",
    "extra.verify": "TLS verification",
    "extra.redis_conn_id": "Redis connection ID (shared limits)",
}


def field_label(field_name: str) -> str | None:
    """The form's label of a stored field, or of the nearest field holding it (``extra.rate_limit.burst``)."""
    name = field_name
    while name:
        if name in FIELD_LABELS:
            return FIELD_LABELS[name]
        name = name.rpartition(".")[0]
    return None


def field_title(field_name: str) -> str:
    """A field as error texts name it: the label the user sees and the stored name, ``Webhook user ID (login)``."""
    label = field_label(field_name)
    return f"{label} ({field_name})" if label else field_name


def _invalid(field_name: str, problem: str) -> Bitrix24ConfigError:
    return Bitrix24ConfigError(field_name, problem, label=field_label(field_name))


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


_LOOPBACK_V4: Final = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6: Final = ipaddress.IPv6Address("::1")


def is_loopback(hostname: str) -> bool:
    """
    Whether ``hostname`` is a loopback address (127.0.0.0/8 or ::1) or the name ``localhost`` itself.

    Decided by the address alone: no other name counts (``x.localhost`` is not loopback), and no name is
    resolved.
    """
    name = hostname.lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address in _LOOPBACK_V4
    return address == _LOOPBACK_V6


def parse_base_url(value: str, field_name: str = "host", *, port: int | None = None) -> tuple[str, str]:
    """
    Validate a portal or endpoint URL and split it into ``(base_url, path)``.

    The scheme is optional (``https`` assumed); ``http`` is accepted only for loopback hosts. Errors never
    repeat any part of the URL: it may hold a webhook code.
    """
    raw = value.strip()
    if not raw:
        raise _invalid(field_name, "is empty; expected the portal URL, e.g. https://your-portal.bitrix24.com")
    if "://" not in raw:
        raw = "https://" + raw
    try:
        parts = urlsplit(raw)
        url_port = parts.port
    except ValueError:
        raise _invalid(field_name, "is not a valid URL (check the host name and the port)") from None
    scheme = parts.scheme.lower()
    hostname = parts.hostname or ""
    if scheme not in {"http", "https"}:
        raise _invalid(field_name, "has a scheme other than https; only https (or http on loopback) is allowed")
    if not hostname:
        raise _invalid(field_name, "has no host name")
    if parts.username or parts.password:
        raise _invalid(
            field_name, f"must not contain user:password@; put the webhook code in {field_title('password')}"
        )
    if parts.query or parts.fragment:
        raise _invalid(field_name, "must not contain a query string or fragment")
    if scheme == "http" and not is_loopback(hostname):
        raise _invalid(
            field_name,
            "uses plain http for a host that is not loopback; Bitrix24 requires https (http is accepted only for "
            "127.0.0.0/8, ::1 and localhost)",
        )
    if port is not None and url_port is not None and port != url_port:
        raise _invalid("port", f"{port} disagrees with the port written in {field_title(field_name)}")
    netloc = parts.netloc.lower()
    if port is not None and url_port is None:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}", parts.path


def extra_get(extra: Mapping[str, Any], name: str) -> Any:
    """Read an extra by its plain name, falling back to the pre-2.3 ``extra__bitrix24__<name>`` form."""
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__bitrix24__{name}")
    return None if value == "" else value


def _as_positive_int(value: Any, field_name: str, *, echo: bool = True) -> int:
    """``value`` as a positive integer; ``echo=False`` for a field that may hold a secret typed in the wrong place."""
    got = f", got {value!r}" if echo else ""
    if isinstance(value, bool):
        raise _invalid(field_name, f"must be a positive integer{got}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise _invalid(field_name, f"must be a positive integer{got}")
    if number <= 0:
        raise _invalid(field_name, f"must be a positive integer{got}")
    return number


def _as_number(value: Any, field_name: str, *, minimum: float, allow_equal: bool) -> float:
    if isinstance(value, bool):
        raise _invalid(field_name, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(field_name, f"must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < minimum or (number == minimum and not allow_equal):
        bound = ">=" if allow_equal else ">"
        raise _invalid(field_name, f"must be a number {bound} {minimum:g}, got {value!r}")
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
    raise _invalid("extra.verify", f"must be true, false or the path of a CA bundle, got {type(value).__name__}")


_RATE_LIMIT_FORMS = '{names} or {{"burst": N, "per_second": R}}'.format(names=" or ".join(RATE_LIMIT_PRESETS))


def _parse_rate_limit(value: Any) -> RateLimit:
    """
    A preset name, a mapping ``{"burst": N, "per_second": R}``, or that mapping as JSON text.

    The JSON text is what the connection form sends when the mapping is typed into its "Rate limit" field.
    """
    if value is None:
        return RATE_LIMIT_PRESETS["standard"]
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            try:  # Airflow 2's form shows a stored object as a Python dict ({'burst': 10, ...}) and saves that text
                value = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise _invalid("extra.rate_limit", f"is not valid JSON; expected {_RATE_LIMIT_FORMS}") from None
    if isinstance(value, str):
        preset = RATE_LIMIT_PRESETS.get(value.strip().lower())
        if preset is None:
            raise _invalid("extra.rate_limit", f"unknown preset {value.strip()[:40]!r}; use {_RATE_LIMIT_FORMS}")
        return preset
    if isinstance(value, Mapping):
        unknown = set(value) - {"burst", "per_second"}
        if unknown:
            raise _invalid(
                "extra.rate_limit", f"unknown keys {sorted(map(str, unknown))}; expected {_RATE_LIMIT_FORMS}"
            )
        if "burst" not in value or "per_second" not in value:
            raise _invalid("extra.rate_limit", f"needs both burst and per_second: {_RATE_LIMIT_FORMS}")
        burst = _as_positive_int(value["burst"], "extra.rate_limit.burst")
        rate = _as_number(value["per_second"], "extra.rate_limit.per_second", minimum=0.0, allow_equal=False)
        return RateLimit(burst=burst, per_second=rate)
    raise _invalid("extra.rate_limit", f"must be {_RATE_LIMIT_FORMS}, got {type(value).__name__}")


def _parse_webhook_code(code: str, field_name: str, subject: str = "") -> str:
    # Never echo the value: it is a secret.
    if not code:
        raise _invalid(field_name, f"{subject}is empty; expected the webhook code")
    if not _CODE_CHARS.match(code):
        raise _invalid(field_name, f"{subject}contains characters a webhook code never has (/, spaces, ...)")
    return code


def _parse_oauth(extra: Mapping[str, Any]) -> OAuthCredentials:
    values: dict[str, str] = {}
    for name in ("client_id", "client_secret", "refresh_token"):
        value = extra_get(extra, name)
        if not isinstance(value, str) or not value.strip():
            raise _invalid(f"extra.{name}", "is required for auth type 'oauth' and must be a string")
        values[name] = value.strip()
    access = extra_get(extra, "access_token")
    if access is not None and not isinstance(access, str):
        raise _invalid("extra.access_token", "must be a string")
    expires_raw = extra_get(extra, "expires_at")
    expires = (
        None if expires_raw is None else _as_number(expires_raw, "extra.expires_at", minimum=0.0, allow_equal=True)
    )
    oauth_url_raw = extra_get(extra, "oauth_url") or DEFAULT_OAUTH_URL
    if not isinstance(oauth_url_raw, str):
        raise _invalid("extra.oauth_url", "must be a URL string")
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
        raise _invalid("extra", "must be a JSON object")
    base_url, path = parse_base_url(host or "", "host", port=port)
    host_title, login_title, password_title = (field_title(f) for f in ("host", "login", "password"))

    auth_type = extra_get(extra, "auth_type") or "webhook"
    if not isinstance(auth_type, str) or auth_type.strip().lower() not in {"webhook", "oauth"}:
        raise _invalid("extra.auth_type", f"must be 'webhook' or 'oauth', got {str(auth_type)[:20]!r}")
    auth_type = auth_type.strip().lower()

    auth: WebhookAuth | OAuthCredentials
    webhook_path = _WEBHOOK_PATH.match(path)
    if auth_type == "oauth":
        if webhook_path:
            raise _invalid("host", "is a webhook URL, but the auth type is 'oauth'; give the portal URL")
        if login or password:
            raise _invalid("login/password", "must be empty for auth type 'oauth'; the OAuth fields are extras")
        auth = _parse_oauth(extra)
    elif webhook_path:
        if login or password:
            raise _invalid(
                "login/password",
                f"must be empty when {host_title} is the full webhook URL (it already holds user and code)",
            )
        user = webhook_path["user"]
        if not (user.isdigit() and int(user) > 0):
            raise _invalid("host", "holds a webhook URL whose user ID (/rest/<user>/...) is not a positive integer")
        code = _parse_webhook_code(webhook_path["code"], "host", "holds a webhook URL whose code ")
        auth = WebhookAuth(user_id=int(user), code=code)
    else:
        if path.rstrip("/") not in {"", "/rest"}:
            raise _invalid(
                "host",
                "has a path that is not a webhook URL; expected https://PORTAL (recommended, with the code in "
                f"{password_title}) or https://PORTAL/rest/<user>/<code>/",
            )
        if not login and not password:
            raise _invalid(
                "password",
                f"is empty: give the portal URL in {host_title}, the user ID in {login_title} and the webhook code "
                f"in {password_title} (or the full webhook URL in {host_title}), or choose the auth type 'oauth'",
            )
        if not login:
            raise _invalid("login", "is empty; expected the ID of the user who created the webhook")
        user_id = _as_positive_int(login.strip(), "login", echo=False)
        auth = WebhookAuth(user_id=user_id, code=_parse_webhook_code((password or "").strip(), "password"))

    timeout_raw = extra_get(extra, "timeout")
    timeout = (
        DEFAULT_TIMEOUT
        if timeout_raw is None
        else _as_number(timeout_raw, "extra.timeout", minimum=0, allow_equal=False)
    )
    retries_raw = extra_get(extra, "max_retries")
    if retries_raw is None:
        max_retries = DEFAULT_MAX_RETRIES
    elif not isinstance(retries_raw, bool) and str(retries_raw).strip() == "0":
        max_retries = 0
    else:
        try:
            max_retries = _as_positive_int(retries_raw, "extra.max_retries")
        except Bitrix24ConfigError:
            raise _invalid("extra.max_retries", f"must be a non-negative integer, got {retries_raw!r}") from None
    return PortalConfig(
        base_url=base_url,
        auth=auth,
        timeout=timeout,
        verify=_parse_verify(extra_get(extra, "verify")),
        max_retries=max_retries,
        rate_limit=_parse_rate_limit(extra_get(extra, "rate_limit")),
    )
