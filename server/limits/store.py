"""Where limit state lives: this process (`LocalStore`), or Redis for every worker and
instance at once (`RedisStore`, atomic Lua scripts), falling back to this process when
Redis does not answer.

Keys are hashed before they reach Redis: a limit needs to tell clients apart, not to store
their addresses or learner ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from server.limits.bucket import Counts, KeyedBuckets, Rate

log = logging.getLogger(__name__)

#: A held place in Redis lives this long unless renewed (a crashed process frees its places).
LEASE_SECONDS = 60
#: Redis must answer a limit check within this, or this process decides alone.
REDIS_TIMEOUT_S = 0.25
#: After a failure, Redis is not asked again for this long (no 250 ms wait per check).
BREAKER_SECONDS = 5.0


class LimitStore(Protocol):
    name: str

    async def take(self, limit: str, key: str, rate: Rate) -> float:
        """One token from `key`'s bucket of `limit`: 0.0, or seconds to wait."""
        ...

    async def acquire(self, limit: str, key: str, most: int, holder: str) -> bool:
        """One of at most `most` places of `key` for `holder` (a unique id)."""
        ...

    async def release(self, limit: str, key: str, holder: str) -> None: ...

    async def close(self) -> None: ...


class LocalStore:
    """In this process only; `clock` is monotonic seconds (tests pass their own)."""

    name = "process"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, Rate], KeyedBuckets] = {}
        self._counts: dict[str, Counts] = {}

    async def take(self, limit: str, key: str, rate: Rate) -> float:
        return self.take_now(limit, key, rate)

    def take_now(self, limit: str, key: str, rate: Rate) -> float:
        buckets = self._buckets.get((limit, rate))
        if buckets is None:
            buckets = self._buckets[(limit, rate)] = KeyedBuckets(rate)
        return buckets.take(key, self._clock())

    async def acquire(self, limit: str, key: str, most: int, holder: str) -> bool:
        return self._counts.setdefault(limit, Counts()).acquire(key, most)

    async def release(self, limit: str, key: str, holder: str) -> None:
        counts = self._counts.get(limit)
        if counts is not None:
            counts.release(key)

    async def close(self) -> None:
        pass


_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(v[1]) or burst
local stamp = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil((ttl + 1) * 1000))
return 1
"""


class RedisStore:
    """Limits shared by every process on one Redis; each call falls back to `local`
    (this process's view) when Redis fails or is slow, and says so in the log once."""

    name = "redis"

    def __init__(self, client: Any, prefix: str, local: LocalStore | None = None) -> None:
        self._redis = client
        self._prefix = prefix
        self.local = local or LocalStore()
        self._take = client.register_script(_TAKE)
        self._acquire = client.register_script(_ACQUIRE)
        #: Places held in Redis by this process: renewed until released.
        self._held: set[tuple[str, str]] = set()
        #: Places held in the local fallback (released there).
        self._held_locally: set[tuple[str, str, str]] = set()
        self._renewer: asyncio.Task[None] | None = None
        #: Places that may be held in Redis although this process does not know (a timeout
        #: after the script ran, a release that failed): removed by the renewer.
        self._orphans: set[tuple[str, str]] = set()
        self.fallbacks = 0
        self._degraded = False
        self._skip_until = 0.0

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisStore:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            max_connections=32,
            decode_responses=True,
        )
        return cls(client, prefix)

    def _key(self, limit: str, key: str) -> str:
        digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=12).hexdigest()
        return f"{self._prefix}limit:{limit}:{digest}"

    def _skipping(self) -> bool:
        return time.monotonic() < self._skip_until

    async def take(self, limit: str, key: str, rate: Rate) -> float:
        if self._skipping():
            self.fallbacks += 1
            return self.local.take_now(limit, key, rate)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                wait = await self._take(
                    keys=[self._key(limit, key)], args=[rate.per_second, rate.burst]
                )
        except Exception as exc:  # any Redis failure: decide in this process
            self._fell_back(exc)
            return self.local.take_now(limit, key, rate)
        self._recovered()
        return float(wait)

    async def acquire(self, limit: str, key: str, most: int, holder: str) -> bool:
        rkey = self._key(limit, key)
        try:
            if self._skipping():
                raise ConnectionError("Redis skipped after a recent failure")
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                got = await self._acquire(keys=[rkey], args=[most, holder, LEASE_SECONDS])
        except Exception as exc:
            self._fell_back(exc)
            self._orphans.add((rkey, holder))  # the script may have run before the timeout
            self._ensure_renewer()
            got = await self.local.acquire(limit, key, most, holder)
            if got:
                self._held_locally.add((limit, key, holder))
            return got
        self._recovered()
        if int(got):
            self._held.add((rkey, holder))
            self._ensure_renewer()
        return bool(int(got))

    async def release(self, limit: str, key: str, holder: str) -> None:
        if (limit, key, holder) in self._held_locally:
            self._held_locally.discard((limit, key, holder))
            await self.local.release(limit, key, holder)
            return
        rkey = self._key(limit, key)
        self._held.discard((rkey, holder))
        try:
            if self._skipping():
                raise ConnectionError("Redis skipped after a recent failure")
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                await self._redis.zrem(rkey, holder)
        except Exception as exc:
            self._fell_back(exc)
            self._orphans.add((rkey, holder))  # removed by the renewer when Redis answers
            self._ensure_renewer()

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever(), name="limit-leases")

    async def _renew_forever(self) -> None:
        while self._held or self._orphans:
            await asyncio.sleep(LEASE_SECONDS / 3)
            held, orphans = list(self._held), list(self._orphans)
            if not held and not orphans:
                continue
            try:
                seconds, micros = await self._redis.time()
                now = seconds + micros / 1e6
                async with self._redis.pipeline(transaction=False) as pipe:
                    for rkey, holder in held:
                        pipe.zadd(rkey, {holder: now + LEASE_SECONDS}, xx=True)
                        pipe.pexpire(rkey, math.ceil((LEASE_SECONDS + 1) * 1000))
                    for rkey, holder in orphans:
                        pipe.zrem(rkey, holder)
                    await pipe.execute()
                self._orphans.difference_update(orphans)
            except Exception as exc:  # tried again on the next round
                self._fell_back(exc)

    def _fell_back(self, exc: BaseException) -> None:
        self.fallbacks += 1
        self._skip_until = time.monotonic() + BREAKER_SECONDS
        if not self._degraded:
            self._degraded = True
            log.warning(
                "limits: Redis did not answer (%s); each process limits on its own until it does",
                type(exc).__name__,
            )

    def _recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("limits: Redis answers again; limits are shared again")

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        with contextlib.suppress(Exception):
            await self._redis.aclose()
