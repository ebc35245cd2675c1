"""
Build the Redis-shared limiter from an Airflow Redis connection (``apache-airflow-providers-redis``).

Imported only when a Bitrix24 connection names ``redis_conn_id``, so that importing operators never imports Redis.
The Redis client is built from the connection's fields the way ``RedisHook`` reads them (host, port, login,
password, extra ``db`` and ``ssl*``), for the sync client and for the asyncio one alike.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any

from airflow_provider_bitrix24.client.config import field_label
from airflow_provider_bitrix24.client.errors import Bitrix24ConfigError

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.config import PortalConfig
    from airflow_provider_bitrix24.client.limits_redis import RedisLimiter

_SSL_ARGS = ("ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_keyfile", "ssl_certfile", "ssl_check_hostname")
#: The limiter must never stall a call for long on a Redis that does not answer.
_SOCKET_TIMEOUT = 2.0


def redis_kwargs(conn: Any, conn_id: str) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis`` / ``redis.asyncio.Redis`` from an Airflow Redis connection."""
    extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
    if extra.get("cluster"):
        raise Bitrix24ConfigError(
            "extra.redis_conn_id",
            f"the Redis connection {conn_id!r} is a cluster; give a single Redis server",
            label=field_label("extra.redis_conn_id"),
        )
    if not conn.host:
        raise Bitrix24ConfigError(
            "extra.redis_conn_id",
            f"the Redis connection {conn_id!r} has no host",
            label=field_label("extra.redis_conn_id"),
        )
    password = conn.password if str(conn.password).lower() not in ("none", "false", "") else None
    kwargs: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port or 6379,
        "username": conn.login or None,
        "password": password,
        "db": extra.get("db") or 0,
        "socket_timeout": _SOCKET_TIMEOUT,
        "socket_connect_timeout": _SOCKET_TIMEOUT,
    }
    kwargs.update({name: extra[name] for name in _SSL_ARGS if name in extra})
    return kwargs


_limiters: dict[str, RedisLimiter] = {}
_limiters_lock = threading.Lock()


def redis_limiter(config: PortalConfig, conn: Any, conn_id: str) -> RedisLimiter:
    """
    The limiter of ``config``'s portal and credential, shared through the Redis server of ``conn``; one per
    process for the same server, portal and credential (so its connections and fallback state are shared too).
    """
    import redis
    import redis.asyncio
    import redis.asyncio.retry
    import redis.retry
    from redis.backoff import NoBackoff

    from airflow_provider_bitrix24.client.limits import credential_key
    from airflow_provider_bitrix24.client.limits_redis import RedisLimiter

    kwargs = redis_kwargs(conn, conn_id)
    identity = repr((sorted(kwargs.items()), config.portal_key, credential_key(config), config.rate_limit))
    key = hashlib.sha256(identity.encode()).hexdigest()
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = RedisLimiter(
                config,
                # No retries inside redis-py: an unreachable Redis must fall back at once, not after back-offs.
                sync_client=lambda: redis.Redis(**kwargs, retry=redis.retry.Retry(NoBackoff(), 0)),
                async_client=lambda: redis.asyncio.Redis(**kwargs, retry=redis.asyncio.retry.Retry(NoBackoff(), 0)),
                where=f"{kwargs['host']}:{kwargs['port']} ({conn_id})",
            )
        return limiter
