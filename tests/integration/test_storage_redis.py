"""RedisSessionStore against the real Redis on 127.0.0.1:6379 (own key prefix, cleaned)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from pipelines.ports import Exchange
from server.storage.redis_sessions import RedisSessionStore

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = f"lva_test_{uuid.uuid4().hex[:10]}:"
    yield p
    client = aioredis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=p + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def make_store(prefix: str) -> AsyncIterator[Callable[..., RedisSessionStore]]:
    made: list[RedisSessionStore] = []

    def make(ttl: int = 60, max_exchanges: int = 10) -> RedisSessionStore:
        store = RedisSessionStore(REDIS_URL, ttl, max_exchanges, key_prefix=prefix)
        made.append(store)
        return store

    yield make
    for s in made:
        await s.close()


def ex(i: int, who: str = "") -> Exchange:
    return Exchange(user=f"{who}u{i}", agent=f"{who}a{i}", timestamp=float(i))


def test_default_layout_is_what_the_runbook_lists() -> None:
    store = RedisSessionStore(REDIS_URL, 60, 10)
    assert store.meta_key("abc") == "session:abc"
    assert store.context_key("abc") == "session:abc:context"


async def test_context_continues_on_another_instance(make_store, prefix: str) -> None:
    a, b = make_store(), make_store()
    await a.start()
    await b.start()
    await a.append_exchange("s1", Exchange("What is recall?", "Pulling it from memory.", 1.0))
    await b.append_exchange("s1", Exchange("And recognition?", "Seeing it and knowing.", 2.0))
    ctx_a = await a.get_context("s1")
    ctx_b = await b.get_context("s1")
    assert ctx_a == ctx_b
    assert [e.user for e in ctx_a] == ["What is recall?", "And recognition?"]
    info = await b.info("s1")
    assert info is not None and info["exchange_count"] == 2
    assert info["last_activity"] >= info["created_at"]


async def test_context_is_trimmed_atomically(make_store) -> None:
    store = make_store(max_exchanges=3)
    for i in range(7):
        await store.append_exchange("s", ex(i))
    assert [e.user for e in await store.get_context("s")] == ["u4", "u5", "u6"]
    assert (await store.info("s"))["exchange_count"] == 7


async def test_concurrent_appends_from_two_instances_lose_nothing(make_store) -> None:
    a, b = make_store(max_exchanges=1000), make_store(max_exchanges=1000)
    n = 150
    await asyncio.gather(
        *(a.append_exchange("shared", ex(i, "A")) for i in range(n)),
        *(b.append_exchange("shared", ex(i, "B")) for i in range(n)),
    )
    ctx = await a.get_context("shared")
    assert len(ctx) == 2 * n
    assert (await a.info("shared"))["exchange_count"] == 2 * n
    from_a = [e.user for e in ctx if e.user.startswith("A")]
    assert sorted(from_a, key=lambda u: int(u[2:])) == [f"Au{i}" for i in range(n)]


async def test_concurrent_appends_keep_the_bound(make_store) -> None:
    a, b = make_store(max_exchanges=5), make_store(max_exchanges=5)
    await asyncio.gather(
        *(a.append_exchange("s", ex(i, "A")) for i in range(40)),
        *(b.append_exchange("s", ex(i, "B")) for i in range(40)),
    )
    assert len(await b.get_context("s")) == 5
    assert (await b.info("s"))["exchange_count"] == 80


async def test_ttl_expires_and_activity_refreshes(make_store, prefix: str) -> None:
    store = make_store(ttl=2)
    raw = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        await store.append_exchange("live", ex(1))
        await store.append_exchange("idle", ex(1))
        assert 0 < await raw.ttl(prefix + "session:idle:context") <= 2
        await asyncio.sleep(1.2)
        await store.touch("live")
        assert await raw.ttl(prefix + "session:live") == 2
        assert await raw.ttl(prefix + "session:live:context") == 2
        await asyncio.sleep(1.2)
        assert await store.get_context("idle") == []
        assert await store.info("idle") is None
        assert [e.user for e in await store.get_context("live")] == ["u1"]
        assert await store.count_active() == 1
    finally:
        await raw.aclose()


async def test_count_active_scans_only_session_hashes(make_store) -> None:
    store = make_store()
    for i in range(25):
        await store.append_exchange(f"s{i}", ex(i))
    await store.touch("listening-only")
    assert await store.count_active() == 26


async def test_unreachable_redis_degrades_without_raising() -> None:
    store = RedisSessionStore("redis://127.0.0.1:1/0", 60, 10)
    try:
        assert await store.ping() is False
        assert await store.get_context("s") == []
        await store.append_exchange("s", ex(1))
        await store.touch("s")
        assert store.errors == 3
        with pytest.raises(RedisConnectionError):
            await store.start()
    finally:
        await store.close()


async def test_two_app_instances_share_sessions(tmp_path, prefix: str) -> None:
    """Two full storage stacks (as two server processes would build them) on one Redis."""
    from aiohttp.test_utils import TestClient, TestServer
    from test_storage_support import app_with, storage_settings

    from server.storage.factory import close_storage, open_storage

    def settings(name: str):  # type: ignore[no-untyped-def]
        return storage_settings(
            tmp_path / name, redis_url=REDIS_URL, redis_key_prefix=prefix, embedder="none"
        )

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = await open_storage(settings("a")), await open_storage(settings("b"))
    client = TestClient(TestServer(app_with(second, settings("b"))))
    await client.start_server()
    try:
        assert first.sessions.name == "redis"
        await first.sessions.append_exchange("conv", Exchange("Hi, I'm learning Go", "Nice!", 1.0))
        ctx = await second.sessions.get_context("conv")
        assert [e.user for e in ctx] == ["Hi, I'm learning Go"]
        body = await (await client.get("/api/stats")).json()
        assert body["active_sessions"] == 1
    finally:
        await client.close()
        await close_storage(first)
        await close_storage(second)


async def test_a_deleted_session_stays_deleted_for_late_appends(make_store, prefix) -> None:
    """A turn still in flight (on this or another instance) appends after the deletion:
    the context does not come back, and the session is not counted as active."""
    store = make_store()
    await store.append_exchange("gone", Exchange("secret", "noted", 1.0))
    await store.delete("gone")
    await store.append_exchange("gone", Exchange("another secret", "noted", 2.0))
    await store.touch("gone")
    assert await store.get_context("gone") == []
    assert not await store.exists("gone") and await store.count_active() == 0
    await store.append_exchange("kept", Exchange("hi", "hello", 3.0))
    assert [e.user for e in await store.get_context("kept")] == ["hi"]
