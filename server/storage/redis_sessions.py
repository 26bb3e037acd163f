"""Redis session store: conversation context shared by every instance behind the balancer.

Layout (documented for operators in docs/storage.md), for a session id `abc`:

    session:abc            hash  created_at, last_activity (epoch s), exchange_count
    session:abc:context    list  JSON exchanges, oldest first, at most CONTEXT_MAX_EXCHANGES
    session:abc:deleted    string  set when the learner deleted the session (for the TTL):
                           appends and touches of it are dropped, so a turn still in flight
                           somewhere cannot bring the deleted context back

Both keys carry the same TTL (SESSION_TTL_SECONDS), refreshed on every append or touch.
An append is one Lua script (RPUSH, LTRIM, HSET, HINCRBY, EXPIRE x2), so two instances
appending to one session at once never lose or reorder each other's exchanges and the
list never grows past the bound. Code never calls KEYS: counting sessions is a SCAN.

When Redis is unreachable the voice loop goes on without remembered context (reads
return nothing, writes are skipped and logged); `ping()` reports the outage to health.
"""

from __future__ import annotations

import json
import logging
import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipelines.ports import Exchange

log = logging.getLogger(__name__)

_APPEND = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[4])
redis.call('HSET', KEYS[1], 'last_activity', ARGV[4])
local n = redis.call('HINCRBY', KEYS[1], 'exchange_count', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return n
"""

_TOUCH = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[2])
redis.call('HSETNX', KEYS[1], 'exchange_count', 0)
redis.call('HSET', KEYS[1], 'last_activity', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

SOCKET_TIMEOUT = 2.0
MAX_CONNECTIONS = 32


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisSessionStore:
    """SessionStore + SessionAdmin on Redis (see module docstring for the key layout)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        ttl_seconds: int,
        max_exchanges: int,
        key_prefix: str = "",
        client: aioredis.Redis | None = None,
    ) -> None:
        self._ttl = int(ttl_seconds)
        self._max = int(max_exchanges)
        self._prefix = key_prefix
        # A blocking pool: a burst of calls waits (at most SOCKET_TIMEOUT) for one of
        # MAX_CONNECTIONS connections instead of failing or opening sockets without limit.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=SOCKET_TIMEOUT,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._redis = client or aioredis.Redis(connection_pool=pool)
        self._append = self._redis.register_script(_APPEND)
        self._touch = self._redis.register_script(_TOUCH)
        self.errors = 0

    @property
    def client(self) -> aioredis.Redis:
        """The connection pool, for other records that must hold across instances (e.g.
        used stream tokens, server/transports/twilio_tokens.py)."""
        return self._redis

    def meta_key(self, session_id: str) -> str:
        return f"{self._prefix}session:{session_id}"

    def context_key(self, session_id: str) -> str:
        return f"{self._prefix}session:{session_id}:context"

    def deleted_key(self, session_id: str) -> str:
        return f"{self._prefix}session:{session_id}:deleted"

    def _keys(self, session_id: str) -> list[str]:
        return [
            self.meta_key(session_id),
            self.context_key(session_id),
            self.deleted_key(session_id),
        ]

    async def start(self) -> None:
        """Fail fast at start-up on a wrong URL, with the reason."""
        await self._redis.ping()

    # --- SessionStore ----------------------------------------------------------------
    async def get_context(self, session_id: str) -> list[Exchange]:
        try:
            raw = await self._redis.lrange(self.context_key(session_id), 0, -1)
        except RedisError as exc:
            self._failed("get_context", exc)
            return []
        out = []
        for item in raw:
            try:
                data = json.loads(item)
                out.append(Exchange(str(data["user"]), str(data["agent"]), float(data["ts"])))
            except (ValueError, KeyError, TypeError):
                continue  # a hand-edited or foreign entry: skip it, keep the rest
        return out

    async def append_exchange(self, session_id: str, exchange: Exchange) -> None:
        item = json.dumps(
            {"user": exchange.user, "agent": exchange.agent, "ts": exchange.timestamp},
            ensure_ascii=False,
        )
        keys = self._keys(session_id)
        try:
            await self._append(keys=keys, args=[item, self._max, self._ttl, f"{time.time():.3f}"])
        except RedisError as exc:
            self._failed("append_exchange", exc)

    async def touch(self, session_id: str) -> None:
        keys = self._keys(session_id)
        try:
            await self._touch(keys=keys, args=[self._ttl, f"{time.time():.3f}"])
        except RedisError as exc:
            self._failed("touch", exc)

    async def exists(self, session_id: str) -> bool:
        """Whether the session has live context; raises if Redis cannot say (unlike
        `get_context`, whose empty answer on failure keeps a conversation going)."""
        keys = (self.meta_key(session_id), self.context_key(session_id))
        return bool(await self._redis.exists(*keys))

    async def delete(self, session_id: str) -> None:
        """Forget the session's context on every instance (the learner deleted it). Unlike
        the calls on the voice path, a failure here is raised: a deletion must not be
        reported done when it was not."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.deleted_key(session_id), "1", ex=self._ttl)
            pipe.delete(self.meta_key(session_id), self.context_key(session_id))
            await pipe.execute()

    # --- SessionAdmin ----------------------------------------------------------------
    async def count_active(self) -> int:
        """Sessions with a live meta hash, counted by SCAN (never KEYS)."""
        pattern = _glob_escape(self._prefix) + "session:*"
        count = 0
        async for _ in self._redis.scan_iter(match=pattern, count=1000, _type="hash"):
            count += 1
        return count

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    async def info(self, session_id: str) -> dict[str, float] | None:
        data = await self._redis.hgetall(self.meta_key(session_id))
        if not data:
            return None
        return {k: float(v) for k, v in data.items()}

    def _failed(self, op: str, exc: Exception) -> None:
        self.errors += 1
        log.warning("redis session store failed", extra={"op": op, "error": repr(exc)[:200]})
