"""
Settings of the sandbox portal.

Every threshold the real cloud portal applies (the leaky bucket, the per-method operating limit, token lifetimes)
and every portal-wide failure mode (plan without REST, manual overload block, deleted portal) is a field of
:class:`SandboxConfig`, so a test can switch it on, shrink it or turn it off. Most fields can be changed on a
running portal (``SandboxPortal.configure`` or ``POST /_sandbox/config``); ``host`` and ``port`` are fixed once the
socket is bound, and ``bulk_messages`` / ``extra_sessions`` / ``generated_sessions`` / ``generated_messages`` take
effect at the next reset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_bitrix24.sandbox.latency import ANY_METHOD, check_seconds
from airflow_provider_bitrix24.sandbox.latency import PRESETS as LATENCY_PRESETS

#: Scopes of the default webhook and of the OAuth application.
FULL_SCOPES: tuple[str, ...] = ("imopenlines", "im", "imbot", "user", "crm")

#: Fields that take one of a few names, and the names they take.
CHOICES: dict[str, tuple[str, ...]] = {
    "auth_error_style": ("code", "docs"),
    "batch_billing": ("batch", "command"),
    "latency": tuple(LATENCY_PRESETS),
}
#: Bounds of the seed's size: ``bulk_messages`` and ``extra_sessions`` are built in memory at every reset.
MAX_BULK_MESSAGES = 100_000
MAX_EXTRA_SESSIONS = 100_000
MAX_GENERATED_MESSAGES = 1_000
_SIZE_BOUNDS = {
    "bulk_messages": MAX_BULK_MESSAGES,
    "extra_sessions": MAX_EXTRA_SESSIONS,
    "generated_sessions": MAX_EXTRA_SESSIONS,
    "generated_messages": MAX_GENERATED_MESSAGES,
}
#: Latency figures that default to the ``latency`` preset's when left ``None``.
LATENCY_FIGURES = ("network_round_trip", "request_overhead")

#: ``(burst, per_second)`` of the leaky bucket per plan; ``None`` switches the bucket off.
PRESETS: dict[str, tuple[int, float] | None] = {
    "standard": (50, 2.0),
    "enterprise": (250, 5.0),
    "unlimited": None,
}


@dataclass(frozen=True)
class WebhookSpec:
    """An inbound webhook: the employee it acts as, its secret code and the scopes it was granted."""

    user_id: int
    code: str
    scopes: tuple[str, ...]

    @classmethod
    def from_value(cls, value: Any) -> WebhookSpec:
        """Build a webhook from a ``WebhookSpec`` or a JSON object ``{"user_id", "code", "scopes"}``."""
        if isinstance(value, WebhookSpec):
            return value
        if not isinstance(value, dict):
            raise TypeError("a webhook must be an object with user_id, code and scopes")
        return cls(int(value["user_id"]), str(value["code"]), tuple(str(s) for s in value.get("scopes", ())))


def _default_webhooks() -> list[WebhookSpec]:
    return [
        WebhookSpec(1, "sandbox-webhook-0000", FULL_SCOPES),
        WebhookSpec(2, "sandbox-limited-0000", ("user",)),
    ]


@dataclass
class SandboxConfig:
    """
    Behaviour of one sandbox portal.

    The first entry of ``webhooks`` is the default webhook, the second the "limited" one (``user`` scope only).

    :param host: Address to bind; loopback by default.
    :param port: Port to bind; 0 picks a free one.
    :param rate_limit_enabled: Whether the per-IP leaky bucket is applied.
    :param burst: Bucket threshold: a request is refused when the counter is above it.
    :param per_second: Bucket drain rate, requests per second.
    :param limit_status: HTTP status of ``QUERY_LIMIT_EXCEEDED`` (503 per current docs, 429 per older docs).
    :param count_rejected: Whether refused requests still fill the bucket.
    :param operating_enabled: Whether the per-method operating limit is applied.
    :param operating_limit: Seconds of execution time allowed per credential and method within the window.
    :param operating_window: Lifetime of one bucket, seconds (600 on the cloud).
    :param operating_bucket: Length of one bucket, seconds (60 on the cloud).
    :param operating_cost: Execution seconds charged per call of a method, instead of the measured time.
    :param batch_billing: How a ``batch`` request is metered: ``"batch"`` (default, as 2026 portals do) charges the
        whole batch's execution time to the method ``batch`` and not to its commands' methods; ``"command"`` (as
        2022-2023 portals did) charges each command to its own method and leaves ``batch`` unmetered. A command
        whose own method is blocked is refused inside a batch either way.
    :param https_required: Refuse plain-HTTP webhook calls with ``INVALID_REQUEST``.
    :param auth_error_style: How a wrong webhook code is answered: ``"code"`` (default, what real portals answer)
        with ``INVALID_CREDENTIALS`` (401), ``"docs"`` with ``NO_AUTH_FOUND`` (401) as the documentation's table says.
    :param access_token_ttl: Lifetime of OAuth access tokens, seconds.
    :param refresh_token_ttl: Lifetime of OAuth refresh tokens, seconds.
    :param auth_code_ttl: Lifetime of OAuth authorization codes, seconds.
    :param rest_unavailable: The plan has no REST access (``ACCESS_DENIED``).
    :param overloaded: REST is blocked manually (``OVERLOAD_LIMIT``).
    :param portal_deleted: The portal is closed (``PORTAL_DELETED``, 410).
    :param subscription_ended: The portal's subscription has ended (``PAYMENT_REQUIRED``, 401, "Subscription has been
        ended"), on every REST call.
    :param app_user_restricted: The application is restricted to other users (``user_access_error``, OAuth only).
    :param payment_required: The token endpoint answers ``PAYMENT_REQUIRED``.
    :param quick_save_race: Run the quick-answer lookup and insert without a lock between them, as the real
        portal does, so that concurrent saves of one message can both insert.
    :param race_window: Pause between lookup and insert when ``quick_save_race`` is on, seconds.
    :param history_ignores_chat_id: Play a portal on an older imopenlines version whose
        ``imopenlines.session.history.get`` ignores ``CHAT_ID``: a call without ``SESSION_ID`` answers
        ``ACCESS_DENIED``.
    :param bulk_messages: Messages in the single session of the bulk chat (at most 100,000).
    :param extra_sessions: Additional chats with one session each, for polling many sessions (at most 100,000).
    :param generated_sessions: Generated open-line sessions with CRM activities, one a minute from 2026-03-21 00:00
        UTC, for exports and benchmarks (at most 100,000; see :mod:`airflow_provider_bitrix24.sandbox.crm`).
    :param generated_messages: Messages in each generated session (at most 1,000).
    :param list_page_size: Page size of list methods (50 on the cloud).
    :param tz_offset_minutes: Offset of the portal's time zone, used in every ISO-8601 date.
    :param webhooks: Inbound webhooks.
    :param oauth_client_id: OAuth application id.
    :param oauth_client_secret: OAuth application secret.
    :param oauth_scopes: Scopes granted to the OAuth application.
    :param oauth_user_id: Employee the OAuth tokens belong to.
    :param oauth_access_token: Access token valid right after start and after every reset.
    :param oauth_refresh_token: Refresh token valid right after start and after every reset.
    :param member_id: Stable portal id reported with OAuth tokens (32 lower-case hex characters, like real ones).
    :param latency: Latency model preset: ``"off"`` (default: answers as fast as the machine allows) or
        ``"realistic"`` (documented figures; see :mod:`airflow_provider_bitrix24.sandbox.latency`).
    :param network_round_trip: Network round trip per HTTP request, seconds; ``None`` takes the preset's.
    :param request_overhead: The portal's own time per request outside any method, seconds; ``None`` takes the
        preset's.
    :param processing_time: Processing seconds per call of a method (``"*"``: every method not listed), laid over
        the preset's.
    :param log_size: Entries kept in the request log of ``/_sandbox/stats``.
    :param verbose: Print one line per request (method and status, secrets masked) to stderr.
    :param im_events_available: The portal has ``im.v2.Event.*``; ``False`` plays an older portal that answers
        ``ERROR_METHOD_NOT_FOUND``.
    :param im_event_retention: Seconds an unconfirmed ``im.v2.Event`` event is kept (24 h on real portals).
    """

    host: str = "127.0.0.1"
    port: int = 0
    rate_limit_enabled: bool = True
    burst: int = 50
    per_second: float = 2.0
    limit_status: int = 503
    count_rejected: bool = False
    operating_enabled: bool = True
    operating_limit: float = 480.0
    operating_window: float = 600.0
    operating_bucket: float = 60.0
    operating_cost: dict[str, float] = field(default_factory=dict)
    batch_billing: str = "batch"
    https_required: bool = False
    auth_error_style: str = "code"
    access_token_ttl: float = 3600.0
    refresh_token_ttl: float = 180 * 86400.0
    auth_code_ttl: float = 30.0
    rest_unavailable: bool = False
    overloaded: bool = False
    portal_deleted: bool = False
    subscription_ended: bool = False
    app_user_restricted: bool = False
    payment_required: bool = False
    quick_save_race: bool = False
    race_window: float = 0.05
    history_ignores_chat_id: bool = False
    bulk_messages: int = 3000
    extra_sessions: int = 0
    generated_sessions: int = 0
    generated_messages: int = 30
    list_page_size: int = 50
    tz_offset_minutes: int = 180
    webhooks: list[WebhookSpec] = field(default_factory=_default_webhooks)
    oauth_client_id: str = "app.sandbox.0000"
    oauth_client_secret: str = "sandbox-client-secret-0000"
    oauth_scopes: tuple[str, ...] = FULL_SCOPES
    oauth_user_id: int = 1
    oauth_access_token: str = "sandbox-access-0000"
    oauth_refresh_token: str = "sandbox-refresh-0000"
    member_id: str = "5a4d0c1b2e3f40516273849a5b6c7d8e"
    latency: str = "off"
    network_round_trip: float | None = None
    request_overhead: float | None = None
    processing_time: dict[str, float] = field(default_factory=dict)
    log_size: int = 20000
    verbose: bool = False
    im_events_available: bool = True
    im_event_retention: float = 86400.0

    def __post_init__(self) -> None:
        self.webhooks = [WebhookSpec.from_value(w) for w in self.webhooks]
        self.operating_cost = {str(k).lower(): float(v) for k, v in self.operating_cost.items()}
        self.processing_time = _processing_time(self.processing_time)
        for name in LATENCY_FIGURES:
            value = getattr(self, name)
            setattr(self, name, None if value is None else check_seconds(name, value))
        self.oauth_scopes = tuple(self.oauth_scopes)
        for name in CHOICES:
            _check_choice(name, getattr(self, name))
        for name in _SIZE_BOUNDS:
            setattr(self, name, _check_size(name, getattr(self, name)))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SandboxConfig:
        """
        Build a config for a plan: ``standard`` (50 / 2 per s), ``enterprise`` (250 / 5 per s) or ``unlimited``.

        :param name: Preset name.
        :param overrides: Any other field.
        """
        key = name.strip().lower()
        if key not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
        values: dict[str, Any] = {}
        bucket = PRESETS[key]
        if bucket is None:
            values["rate_limit_enabled"] = False
        else:
            values["burst"], values["per_second"] = bucket
        values.update(overrides)
        return cls(**values)

    def copy(self) -> SandboxConfig:
        """An independent copy (the mutable fields are copied too)."""
        return dataclasses.replace(
            self,
            operating_cost=dict(self.operating_cost),
            processing_time=dict(self.processing_time),
            webhooks=list(self.webhooks),
        )

    def update(self, **fields: Any) -> None:
        """
        Change fields in place, coercing JSON values to the field's type.

        :raises ValueError: for an unknown field or a value of the wrong shape.
        """
        known = {f.name: f for f in dataclasses.fields(self)}
        for name, value in fields.items():
            if name not in known:
                raise ValueError(f"unknown config field {name!r}")
            setattr(self, name, _coerce(name, getattr(self, name), value))

    @property
    def default_webhook(self) -> WebhookSpec:
        return self.webhooks[0]

    @property
    def limited_webhook(self) -> WebhookSpec:
        return self.webhooks[1] if len(self.webhooks) > 1 else self.webhooks[0]


def _coerce(name: str, current: Any, value: Any) -> Any:
    try:
        if name == "webhooks":
            if not isinstance(value, list | tuple) or not value:
                raise ValueError("webhooks must be a non-empty list")
            return [WebhookSpec.from_value(v) for v in value]
        if name == "operating_cost":
            if not isinstance(value, dict):
                raise ValueError("operating_cost must be an object of method -> seconds")
            return {str(k).lower(): float(v) for k, v in value.items()}
        if name == "oauth_scopes":
            return tuple(str(s) for s in value)
        if name in CHOICES:
            return _check_choice(name, value)
        if name == "processing_time":
            return _processing_time(value)
        if name in LATENCY_FIGURES:
            return None if value is None else check_seconds(name, value)
        if name in _SIZE_BOUNDS:
            return _check_size(name, value)
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            return value
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, str):
            return str(value)
    except (TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"bad value for {name}: {exc}") from None
    return value


def _check_choice(name: str, value: Any) -> str:
    if value not in CHOICES[name]:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, CHOICES[name]))}, not {value!r}")
    return str(value)


def _processing_time(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError("processing_time must be an object of method -> seconds")
    return {
        ANY_METHOD if k == ANY_METHOD else str(k).lower(): check_seconds(f"processing_time[{k!r}]", v)
        for k, v in value.items()
    }


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if not 0 <= number <= _SIZE_BOUNDS[name]:
        raise ValueError(f"{name} must be between 0 and {_SIZE_BOUNDS[name]}, not {value!r}")
    return number
