"""Limits that must hold across workers and instances live in Redis: two stores (two
processes, as far as Redis can tell) share one budget; when Redis does not answer, each
decides alone and still limits; held places of a crashed process expire."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from server.limits import store as store_module
from server.limits.bucket import Rate
from server.limits.policy import Limited, Limits
from server.limits.settings import LimitSettings
from server.limits.store import RedisStore

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"lva_test_{uuid.uuid4().hex[:10]}:"
    yield prefix
    redis = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def test_two_processes_share_one_token_bucket(prefix: str) -> None:
    one, two = RedisStore.from_url(REDIS_URL, prefix), RedisStore.from_url(REDIS_URL, prefix)
    rate = Rate(per_second=0.5, burst=4.0)
    try:
        waits = [await store.take("http", "203.0.113.9", rate) for store in [one, two] * 3]
        assert waits[:4] == [0.0] * 4 and all(w > 1.0 for w in waits[4:])
        assert await one.take("http", "203.0.113.10", rate) == 0.0  # another client
        assert one.fallbacks == two.fallbacks == 0
    finally:
        await one.close()
        await two.close()


async def test_two_processes_share_concurrent_places_and_release_them(prefix: str) -> None:
    one, two = RedisStore.from_url(REDIS_URL, prefix), RedisStore.from_url(REDIS_URL, prefix)
    try:
        assert await one.acquire("sockets", "addr", 2, "h1")
        assert await two.acquire("sockets", "addr", 2, "h2")
        assert not await one.acquire("sockets", "addr", 2, "h3")
        await two.release("sockets", "addr", "h2")
        assert await one.acquire("sockets", "addr", 2, "h3")
        # The address is not stored: keys are hashed.
        redis = aioredis.from_url(REDIS_URL, decode_responses=True)
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        await redis.aclose()
        assert keys and not any("addr" in k.rsplit(":", 1)[1] for k in keys)
    finally:
        await one.close()
        await two.close()


async def test_places_of_a_process_that_died_expire(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "LEASE_SECONDS", 1)
    dead, alive = RedisStore.from_url(REDIS_URL, prefix), RedisStore.from_url(REDIS_URL, prefix)
    try:
        assert await dead.acquire("sockets", "addr", 1, "h1")
        await dead.close()  # no release, no renewal: as if killed
        assert not await alive.acquire("sockets", "addr", 1, "h2")
        await asyncio.sleep(1.2)
        assert await alive.acquire("sockets", "addr", 1, "h2")
    finally:
        await alive.close()


async def test_held_places_are_renewed_while_they_live(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "LEASE_SECONDS", 1.5)
    holder, other = RedisStore.from_url(REDIS_URL, prefix), RedisStore.from_url(REDIS_URL, prefix)
    try:
        assert await holder.acquire("sockets", "addr", 1, "h1")
        await asyncio.sleep(2.5)  # longer than a lease: renewed every half second
        assert not await other.acquire("sockets", "addr", 1, "h2")
        assert holder.fallbacks == other.fallbacks == 0  # decided in Redis, not locally
    finally:
        await holder.close()
        await other.close()


async def test_without_redis_each_process_still_limits_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", "x:")  # nothing listens there
    limits = Limits(LimitSettings(max_sockets_per_address=1, connections_burst=500), store)
    try:
        async with limits.address_place("198.51.100.4"):
            with pytest.raises(Limited) as refused:
                async with limits.address_place("198.51.100.4"):
                    pass
            assert refused.value.limit == "sockets_per_address"
        async with limits.address_place("198.51.100.4"):  # released locally
            pass
        rate = Rate(1.0, 2.0)
        started = time.perf_counter()
        assert [await store.take("t", "k", rate) == 0.0 for _ in range(3)] == [True, True, False]
        for _ in range(100):
            await limits.connection_rate("198.51.100.5")
        # After the first failure Redis is not asked again for a while: no wait per check.
        assert time.perf_counter() - started < 0.2
        assert store.fallbacks >= 100
        warnings = [r for r in caplog.records if "Redis did not answer" in r.getMessage()]
        assert len(warnings) == 1  # said once, not per call
    finally:
        await store.close()
