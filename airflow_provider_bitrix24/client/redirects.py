"""
The redirect policy: which of a portal's redirects the client follows with the credential, and which it refuses.

A cloud portal renamed by its owner answers its old address with a redirect; the POST is sent again to the new one
(never turned into a GET). The credential travels only to the same host (an upgrade from http to https included)
or, from one Bitrix24 cloud portal, to another one over https; everything else would hand the webhook code or the
token to a stranger (a proxy's login page, a TLS-inspecting filter), so it is refused with a clear error.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from airflow_provider_bitrix24.client.config import is_loopback
from airflow_provider_bitrix24.client.errors import Bitrix24PortalMovedError
from airflow_provider_bitrix24.client.wire import HttpResponse

_REDIRECTS: Final = frozenset({301, 302, 307, 308})
_MAX_REDIRECTS: Final = 3
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


def follow(base_url: str, response: HttpResponse, method: str, redirects: int) -> str | None:
    """
    The base URL to send the request to again after ``response``, or ``None`` when it is not a redirect.

    :param redirects: How many redirects this call has followed already.
    :raises Bitrix24PortalMovedError: for a redirect that may not receive the credential, or one too many.
    """
    location = response.headers.get("location", "")
    if response.status not in _REDIRECTS or not location:
        return None
    target = redirect_target(base_url, location)
    problem = None
    if redirects >= _MAX_REDIRECTS:
        problem = f"redirected more than {_MAX_REDIRECTS} times"
    elif target is None and _origin_or_none(location) == _origin_or_none(base_url):
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
    return str(target)
