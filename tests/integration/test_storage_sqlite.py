"""SQLiteCaptureStore on a real file: schema, idempotent batches, search, stats."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from test_storage_hostile import HOSTILE_QUERIES

from pipelines.ports import Capture
from server.storage.base import SearchQuery
from server.storage.sqlite import SQLiteCaptureStore


def cap(i: int, text: str, session: str = "s1", ts: float | None = None) -> Capture:
    return Capture(
        session_id=session,
        user_text=text,
        agent_text=f"reply {i}",
        timestamp=ts if ts is not None else time.time() - 100 + i,
        metadata={"i": i},
        capture_id=f"cap-{i}",
    )


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteCaptureStore(str(tmp_path / "learning_captures.db"))
    await s.start()
    yield s
    await s.close()


async def test_plain_sqlite_file_with_expected_tables(store: SQLiteCaptureStore) -> None:
    await store.write_batch([cap(1, "hello world")])
    db = sqlite3.connect(store.path)
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"captures", "captures_fts", "capture_vectors"} <= names
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT user_text FROM captures").fetchall() == [("hello world",)]
    backup = sqlite3.connect(Path(store.path).with_name("backup.db"))
    db.backup(backup)  # what `.backup` does
    assert backup.execute("SELECT count(*) FROM captures").fetchone()[0] == 1


async def test_write_batch_is_idempotent_on_capture_id(store: SQLiteCaptureStore) -> None:
    await store.write_batch([cap(1, "alpha"), cap(2, "beta")])
    await store.write_batch([cap(2, "beta"), cap(3, "gamma")])
    stats = await store.stats()
    assert stats.total_captures == 3
    assert stats.total_sessions == 1
    assert stats.captures_last_24h == 3


async def test_restart_keeps_data_and_does_not_rerun_migrations(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite")
    s1 = SQLiteCaptureStore(path)
    await s1.start()
    await s1.write_batch([cap(1, "persisted thought")])
    await s1.close()
    s2 = SQLiteCaptureStore(path)
    await s2.start()
    assert (await s2.stats()).total_captures == 1
    hits = await s2.search(SearchQuery("persisted"))
    assert [h.id for h in hits] == [1]
    await s2.close()


async def test_keyword_search_ranks_highlights_and_filters(store: SQLiteCaptureStore) -> None:
    now = time.time()
    await store.write_batch(
        [
            cap(1, "Spaced repetition schedules reviews at growing intervals", ts=now - 50),
            cap(2, "Photosynthesis turns light into chemical energy", ts=now - 40),
            cap(3, "Repetition alone is weaker than <b>retrieval</b> practice", "s2", now - 30),
        ]
    )
    hits = await store.search(SearchQuery("spaced repetition"))
    assert [h.id for h in hits][:2] == [1, 3]
    assert "<mark>Spaced</mark>" in hits[0].snippet
    assert hits[0].score > hits[1].score
    only_s2 = await store.search(SearchQuery("repetition", session_id="s2"))
    assert [h.id for h in only_s2] == [3]
    assert "&lt;b&gt;" in only_s2[0].snippet  # stored HTML is escaped in snippets
    recent = await store.search(SearchQuery("repetition", since=now - 35))
    assert [h.id for h in recent] == [3]
    old = await store.search(SearchQuery("repetition", until=now - 45))
    assert [h.id for h in old] == [1]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
async def test_hostile_queries_never_raise(store: SQLiteCaptureStore, query: str) -> None:
    await store.write_batch([cap(1, "or near drop table captures plus")])
    hits = await store.search(SearchQuery(query))
    assert isinstance(hits, list)


async def test_history_newest_limited_oldest_first(store: SQLiteCaptureStore) -> None:
    await store.write_batch([cap(i, f"t{i}") for i in range(10)])
    await store.write_batch([cap(100, "other", session="s2")])
    hist = await store.history("s1", 3)
    assert [h.user_text for h in hist] == ["t7", "t8", "t9"]
    assert hist[0].metadata == {"i": 7}
    assert await store.history("nobody", 5) == []


async def test_nul_and_control_characters_are_stored_safely(store: SQLiteCaptureStore) -> None:
    await store.write_batch([cap(1, "nul\x00here \x02mark\x03")])
    (h,) = await store.history("s1", 1)
    assert h.user_text == "nulhere mark"


async def test_workers_starting_together_migrate_one_fresh_file_once(tmp_path) -> None:
    """`--workers N` on a new database: every worker opens and migrates the same file at
    the same moment. Each migration must run once (a rebuilt table already existed when
    the second worker ran it, and that worker died)."""
    path = str(tmp_path / "fresh.db")
    stores = [SQLiteCaptureStore(path) for _ in range(4)]
    try:
        await asyncio.gather(*(s.start() for s in stores))
        assert await stores[0].claim_session("s1", "anon_a") == "anon_a"
        assert await stores[3].session_owner("s1") == "anon_a"
    finally:
        for s in stores:
            await s.close()


async def test_a_capture_written_by_one_worker_is_found_by_meaning_through_another(
    tmp_path: Path,
) -> None:
    """Two stores on one file, as two `--workers` processes are: each has searched (its
    vector index loaded, its results cached) before the other writes, and finds the new
    capture by meaning, not by a shared word, within a second."""
    from server.storage.embedder import default_embedder
    from server.storage.hybrid import HybridStore

    path = str(tmp_path / "learning_captures.db")
    embedder = default_embedder()
    a = HybridStore(SQLiteCaptureStore(path), embedder, cache_ttl=60)
    b = HybridStore(SQLiteCaptureStore(path), embedder, cache_ttl=60)
    await a.start()
    await b.start()
    query = SearchQuery("cooking bread at home", limit=5)
    try:
        await a.write_batch([cap(0, "tuning a guitar by ear", session="warm")])
        await a.index_pending()
        for store in (a, b):
            assert await store.search(query)  # index loaded, result cached
        for writer, reader, i in ((a, b, 1), (b, a, 2)):
            text = "sourdough starter feeding schedule" if i == 1 else "kneading a baguette dough"
            await writer.write_batch([cap(i, text, session=f"w{i}")])
            t0 = time.monotonic()
            found = None
            while time.monotonic() - t0 < 1.0 and found is None:
                hits = await reader.search(query)
                found = next((h for h in hits if h.session_id == f"w{i}"), None)
                await asyncio.sleep(0.02)
            assert found is not None, f"worker {i}'s capture not found by the other in 1 s"
            assert not set(query.query.split()) & set(text.split())  # by meaning only
    finally:
        await a.close()
        await b.close()
