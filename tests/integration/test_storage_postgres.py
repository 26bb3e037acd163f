"""PostgresCaptureStore on the real Postgres at 127.0.0.1 (a throwaway database per test)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from test_storage_hostile import HOSTILE_QUERIES
from test_storage_pg_support import set_database_down, temp_database, until
from test_storage_relevance import relevance_captures, score

from pipelines.ports import Capture
from server.storage.base import SearchQuery
from server.storage.embedder import default_embedder
from server.storage.hybrid import HybridStore
from server.storage.pg_migrate import migrations
from server.storage.postgres import PostgresCaptureStore
from server.storage.writer import CaptureWriter


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with temp_database() as d:
        yield d


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresCaptureStore]:
    s = PostgresCaptureStore(dsn, pool_max=4)
    await s.start()
    yield s
    await s.close()


def cap(i: int, text: str, session: str = "s1", ts: float | None = None) -> Capture:
    ts = ts if ts is not None else time.time() - 100 + i
    return Capture(session, text, f"reply {i}", ts, {"i": i}, capture_id=f"cap-{i}")


async def test_migrations_run_once_with_many_instances_starting_together(dsn: str) -> None:
    stores = [PostgresCaptureStore(dsn, pool_max=2) for _ in range(6)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        conn = await asyncpg.connect(dsn)
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        await conn.close()
        assert [r[0] for r in rows] == [v for v, _, _ in migrations()]
        await asyncio.gather(*(s.write_batch([cap(i, f"from {i}")]) for i, s in enumerate(stores)))
        assert (await stores[0].stats()).total_captures == 6
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_batches_are_idempotent_and_stats_add_up(store: PostgresCaptureStore) -> None:
    await store.write_batch([cap(1, "alpha"), cap(2, "beta")])
    await store.write_batch([cap(2, "beta"), cap(3, "gamma", session="s2")])
    stats = await store.stats()
    assert (stats.total_captures, stats.total_sessions, stats.captures_last_24h) == (3, 2, 3)
    assert stats.last_capture_at is not None and abs(stats.last_capture_at - time.time()) < 200


async def test_history_metadata_and_nul_bytes(store: PostgresCaptureStore) -> None:
    await store.write_batch([cap(i, f"t{i}") for i in range(5)] + [cap(9, "nul\x00byte")])
    hist = await store.history("s1", 3)
    assert [h.user_text for h in hist] == ["t3", "t4", "nulbyte"]
    assert hist[0].metadata == {"i": 3}
    assert await store.history("nobody", 3) == []


async def test_keyword_search_ranks_highlights_filters(store: PostgresCaptureStore) -> None:
    now = time.time()
    await store.write_batch(
        [
            cap(1, "Spaced repetition schedules reviews at growing intervals", ts=now - 50),
            cap(2, "Photosynthesis turns light into chemical energy", ts=now - 40),
            cap(3, "Repetition is weaker than <b>retrieval</b> practice", "s2", now - 30),
        ]
    )
    hits = await store.keyword_search(SearchQuery("spaced repetition"), 10)
    assert [h.id for h in hits][:2] == [1, 3]
    assert "<mark>Spaced</mark>" in hits[0].snippet
    assert "<mark>repetition</mark>" in hits[0].snippet
    only_s2 = await store.keyword_search(SearchQuery("repetition", session_id="s2"), 10)
    assert [h.id for h in only_s2] == [3]
    assert "<b>" not in only_s2[0].snippet  # ts_headline drops tags; the rest is escaped
    recent = await store.keyword_search(SearchQuery("repetition", since=now - 35), 10)
    assert [h.id for h in recent] == [3]
    old = await store.keyword_search(SearchQuery("repetition", until=now - 45), 10)
    assert [h.id for h in old] == [1]


async def test_hostile_queries_never_raise(store: PostgresCaptureStore) -> None:
    await store.write_batch([cap(1, "or near drop table captures plus")])
    hybrid = HybridStore(store, default_embedder())
    await hybrid.index_pending()
    for query in HOSTILE_QUERIES:
        assert isinstance(await hybrid.search(SearchQuery(query)), list), query


async def test_hybrid_relevance_on_postgres(dsn: str) -> None:
    store = HybridStore(PostgresCaptureStore(dsn, pool_max=4), default_embedder())
    await store.start()
    try:
        await store.write_batch(relevance_captures())
        await store.index_pending()
        hybrid, keyword = await score(store, "postgres exact cosine")
        assert hybrid >= 0.8 and hybrid > keyword
    finally:
        await store.close()


async def test_database_down_mid_stream_then_back_exactly_once(dsn: str, tmp_path: Path) -> None:
    backend = PostgresCaptureStore(dsn, pool_max=3)
    store = HybridStore(backend, default_embedder())
    await store.start()
    writer = CaptureWriter(store, 25, 10, 50, str(tmp_path / "journal"))
    await writer.start()
    try:
        submitted = 0

        async def produce(n: int) -> None:
            nonlocal submitted
            for _ in range(n):
                writer.submit(Capture(f"s{submitted % 5}", f"u{submitted}", "a", time.time()))
                submitted += 1
                await asyncio.sleep(0.001)

        await produce(100)
        await set_database_down(dsn, True)
        await produce(300)  # the database refuses connections while these arrive
        assert await until(lambda: not writer.healthy, 15)
        assert writer.journal_backlog > 0
        await set_database_down(dsn, False)
        await produce(100)
        drained = await until(
            lambda: not (writer.journal_backlog or writer.depth or not writer.healthy), 30
        )
        assert drained
        conn = await asyncpg.connect(dsn)
        total, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT user_text) FROM captures"
        )
        await conn.close()
        assert (total, distinct) == (submitted, submitted) == (500, 500)
        assert writer.dropped == 0
    finally:
        await writer.close()
        await store.close()


async def test_factory_builds_the_postgres_stack(dsn: str, tmp_path: Path) -> None:
    from test_storage_support import storage_settings

    from server.storage.factory import close_storage, open_storage

    storage = await open_storage(storage_settings(tmp_path, database_url=dsn))
    try:
        assert storage.captures.name == "postgres"
        storage.writer.submit(Capture("fac", "Factory made capture", "ok", time.time()))
    finally:
        await close_storage(storage)  # the clean shutdown flushes it
    conn = await asyncpg.connect(dsn)
    assert await conn.fetchval("SELECT count(*) FROM captures WHERE session_id = 'fac'") == 1
    await conn.close()
