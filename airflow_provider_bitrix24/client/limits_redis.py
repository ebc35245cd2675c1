"""
The portal's limits shared by every process of a deployment, through Redis.

Task processes on several machines and several triggerers all call one portal, which keeps one leaky bucket per
portal and one operating-time account per credential and method. :class:`RedisLimiter` keeps the client's side of
both in Redis, so that together they never overrun the portal:

* the bucket is a GCRA reservation (the "theoretical arrival time" of the bucket's next free slot) in one key per
  portal, updated by a Lua script that books a slot and says how long to wait before using it: exact across
  processes, one round trip per request, and every process reads the same clock (Redis's own ``TIME``);
* the same script first checks whether the method is blocked by ``OPERATION_TIME_LIMIT`` (a hash per credential:
  method -> until when), so a blocked method costs no request anywhere;
* a 503 from the portal ("back off") marks the shared bucket full;
* the OAuth refresh of a token chain holds a Redis lock, so exactly one process refreshes a refresh token.

Why a script of our own: the limiter libraries for Redis (``pyrate-limiter``, ``throttled-py``) answer "allowed or
not, retry after N"; under contention that costs a round trip per attempt and serves no one in order, and none
combines the method block with the slot in one round trip. A reservation is exact with one.

When Redis cannot be reached, a warning is logged once and the limits are kept per process (:class:`LocalLimiter`)
until Redis answers again; calls keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Final

import redis
import redis.asyncio

from airflow_provider_bitrix24.client.config import PortalConfig
from airflow_provider_bitrix24.client.limits import (
    RATE_SAFETY,
    Grant,
    LocalLimiter,
    credential_key,
    local_limiter,
    usable_burst,
)

#: Seconds before an unreachable Redis is tried again.
RETRY_AFTER: Final = 30.0
#: Most seconds a refresh may hold the chain's lock, and may wait for it.
LOCK_TIMEOUT: Final = 60.0
LOCK_WAIT: Final = 90.0

_ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local blocked = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if ARGV[4] ~= '1' and blocked > now then
  return {'blocked', tostring(blocked - now)}
end
local interval = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - tau - now
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {'wait', tostring(wait)}
"""

_ROOM: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
return tostring(tat - now)
"""

_FULL: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local full = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < full then
  redis.call('SET', KEYS[1], tostring(full), 'PX', math.ceil((full - now) * 1000) + 1000)
end
return 1
"""

_BLOCK: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = now + tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if untl > current then
  redis.call('HSET', KEYS[1], ARGV[1], tostring(untl))
end
redis.call('EXPIRE', KEYS[1], 900)
return 1
"""

log = logging.getLogger("airflow_provider_bitrix24.client")

SyncFactory = Callable[[], "redis.Redis"]
AsyncFactory = Callable[[], "redis.asyncio.Redis"]


class RedisLimiter:
    """
    A :class:`~airflow_provider_bitrix24.client.limits.Limiter` shared through Redis.

    :param config: The portal and credential.
    :param sync_client: Makes the ``redis.Redis`` client (called once, on first sync use).
    :param async_client: Makes a ``redis.asyncio.Redis`` client (called once per event loop).
    :param where: ``host:port`` of the Redis server, for log lines (never a password).
    :param local: The per-process fallback (and the local view of operating times).
    """

    def __init__(
        self,
        config: PortalConfig,
        *,
        sync_client: SyncFactory | None = None,
        async_client: AsyncFactory | None = None,
        where: str = "redis",
        local: LocalLimiter | None = None,
        namespace: str = "bitrix24",
    ) -> None:
        self.local = local or local_limiter(config)
        self.where = where
        portal = config.portal_key
        self.bucket_key = f"{namespace}:{{{portal}}}:bucket"
        self.blocks_key = f"{namespace}:{{{portal}}}:blocks:{credential_key(config)}"
        self.lock_prefix = f"{namespace}:{{{portal}}}:oauth-lock:"
        rate = config.rate_limit.per_second * RATE_SAFETY
        self._interval = 1.0 / rate
        self._tau = usable_burst(config.rate_limit) * self._interval
        self._sync_factory = sync_client
        self._async_factory = async_client
        self._sync: redis.Redis | None = None
        self._sync_scripts: dict[str, Any] = {}
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = threading.Lock()
        self._down_until = 0.0
        self._warned = False

    def __repr__(self) -> str:
        return f"RedisLimiter({self.where!r}, bucket={self.bucket_key!r})"

    # -- Redis availability

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _unreachable(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        if not self._warned:
            self._warned = True
            log.warning(
                "Redis at %s is unreachable (%s); the Bitrix24 limits are kept per process until it answers again",
                self.where,
                type(exc).__name__,
            )

    def _answered(self) -> None:
        if self._warned:
            self._warned = False
            log.info("Redis at %s answers again; the Bitrix24 limits are shared again", self.where)

    def _sync_client(self) -> redis.Redis:
        with self._guard:
            if self._sync is None:
                if self._sync_factory is None:
                    raise redis.ConnectionError("no sync Redis client configured")
                self._sync = self._sync_factory()
            return self._sync

    def _sync_script(self, name: str, source: str) -> Any:
        client = self._sync_client()
        with self._guard:
            script = self._sync_scripts.get(name)
            if script is None:
                script = self._sync_scripts[name] = client.register_script(source)
            return script

    def _async_entry(self) -> tuple[Any, dict[str, Any]]:
        """This event loop's client and its registered scripts (asyncio clients are bound to one loop)."""
        loop = asyncio.get_running_loop()
        with self._guard:  # dictionary bookkeeping only, never held across I/O
            entry = self._async.get(loop)
            if entry is None:
                if self._async_factory is None:
                    raise redis.ConnectionError("no asyncio Redis client configured")
                entry = self._async[loop] = (self._async_factory(), {})
            return entry

    def _async_script(self, name: str, source: str) -> Any:
        client, scripts = self._async_entry()
        with self._guard:
            script = scripts.get(name)
            if script is None:
                script = scripts[name] = client.register_script(source)
            return script

    def _grant(self, method: str, reply: Any) -> Grant:
        kind, seconds = (v.decode() if isinstance(v, bytes) else str(v) for v in reply)
        if kind == "blocked":
            until = time.time() + float(seconds)
            self.local.report_blocked(method, until)
            return Grant(0.0, until)
        return Grant(max(0.0, float(seconds)))

    # -- the Limiter protocol

    def _args(self, method: str, force: bool) -> list[Any]:
        return [method.lower(), self._interval, self._tau, "1" if force else "0"]

    def acquire(self, method: str, force: bool = False) -> Grant:
        if self._available():
            try:
                script = self._sync_script("acquire", _ACQUIRE)
                reply = script(keys=[self.bucket_key, self.blocks_key], args=self._args(method, force))
            except redis.RedisError as exc:
                self._unreachable(exc)
            else:
                self._answered()
                return self._grant(method, reply)
        return self.local.acquire(method, force)

    async def aacquire(self, method: str, force: bool = False) -> Grant:
        if self._available():
            try:
                script = self._async_script("acquire", _ACQUIRE)
                reply = await script(keys=[self.bucket_key, self.blocks_key], args=self._args(method, force))
            except redis.RedisError as exc:
                self._unreachable(exc)
            else:
                self._answered()
                return self._grant(method, reply)
        return self.local.acquire(method, force)

    def _room(self, reply: Any) -> int:
        backlog = float(reply.decode() if isinstance(reply, bytes) else reply)
        return max(0, int((self._tau - backlog) / self._interval))

    def headroom(self) -> int:
        if self._available():
            try:
                reply = self._sync_script("room", _ROOM)(keys=[self.bucket_key])
            except redis.RedisError as exc:
                self._unreachable(exc)
            else:
                return self._room(reply)
        return self.local.headroom()

    async def aheadroom(self) -> int:
        if self._available():
            try:
                reply = await self._async_script("room", _ROOM)(keys=[self.bucket_key])
            except redis.RedisError as exc:
                self._unreachable(exc)
            else:
                return self._room(reply)
        return self.local.headroom()

    def report_rejected(self) -> None:
        self.local.report_rejected()
        if self._available():
            try:
                self._sync_script("full", _FULL)(keys=[self.bucket_key], args=[self._tau])
            except redis.RedisError as exc:
                self._unreachable(exc)

    async def areport_rejected(self) -> None:
        self.local.report_rejected()
        if self._available():
            try:
                await self._async_script("full", _FULL)(keys=[self.bucket_key], args=[self._tau])
            except redis.RedisError as exc:
                self._unreachable(exc)

    def report_blocked(self, method: str, until: float) -> None:
        self.local.report_blocked(method, until)
        if self._available():
            try:
                remaining = max(0.0, until - time.time())
                self._sync_script("block", _BLOCK)(keys=[self.blocks_key], args=[method.lower(), remaining])
            except redis.RedisError as exc:
                self._unreachable(exc)

    async def areport_blocked(self, method: str, until: float) -> None:
        self.local.report_blocked(method, until)
        if self._available():
            try:
                remaining = max(0.0, until - time.time())
                await self._async_script("block", _BLOCK)(keys=[self.blocks_key], args=[method.lower(), remaining])
            except redis.RedisError as exc:
                self._unreachable(exc)

    def observe(self, method: str, time_block: Mapping[str, Any] | None) -> float | None:
        return self.local.observe(method, time_block)

    def blocked_until(self, method: str) -> float | None:
        return self.local.blocked_until(method)

    def unblocks_at(self, method: str) -> float | None:
        return self.local.unblocks_at(method)

    def operating(self, method: str) -> float:
        return self.local.operating(method)

    @contextlib.contextmanager
    def refresh_lock(self, name: str) -> Iterator[None]:
        lock = None
        if self._available():
            try:
                client = self._sync_client()
                candidate = client.lock(self.lock_prefix + name, timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT)
                if candidate.acquire():
                    lock = candidate
                else:
                    log.warning("Waited %.0f s for the OAuth refresh lock in Redis; refreshing without it", LOCK_WAIT)
            except redis.RedisError as exc:
                self._unreachable(exc)
        try:
            yield
        finally:
            if lock is not None:
                with contextlib.suppress(redis.RedisError):
                    lock.release()

    @contextlib.asynccontextmanager
    async def arefresh_lock(self, name: str) -> AsyncIterator[None]:
        lock = None
        if self._available():
            try:
                client, _ = self._async_entry()
                candidate = client.lock(self.lock_prefix + name, timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT)
                if await candidate.acquire():
                    lock = candidate
                else:
                    log.warning("Waited %.0f s for the OAuth refresh lock in Redis; refreshing without it", LOCK_WAIT)
            except redis.RedisError as exc:
                self._unreachable(exc)
        try:
            yield
        finally:
            if lock is not None:
                with contextlib.suppress(redis.RedisError):
                    await lock.release()
