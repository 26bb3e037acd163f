"""The learner tests of test_storage_learners.py on Postgres, twice: the machine's
PostgreSQL 15 (search by meaning in process, exact cosine) and a private PostgreSQL 16
with pgvector (HNSW). Plus what only Postgres has: the HNSW filter hazard and its two
remedies, and migration 003 on a database left at version 2.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from test_storage_learners import (  # noqa: F401  (the shared tests run here too)
    ROWS,
    A,
    B,
    IndexCounts,
    dataset,
    meaning,
    own_found_when_others_are_closer,
    test_batches_in_flight_never_bring_erased_captures_back,
    test_capture_is_stored_under_its_sessions_owner,
    test_claims_race_to_exactly_one_owner,
    test_delete_session_removes_captures_and_index_entries_for_good,
    test_forget_learner_erases_them_and_refuses_their_captures,
    test_list_sessions_and_learner_history,
    test_own_captures_found_when_others_are_closer,
    test_query_cache_is_per_learner_and_cleared_by_deletion,
    test_retention_deletes_old_captures_and_keeps_who_owns_each_session,
    test_search_never_returns_another_learners_captures,
)
from test_storage_pg_support import ADMIN_DSN, temp_database
from test_storage_pgvector import Cluster, cluster  # noqa: F401  (the private PG 16)

from server.storage import pg_migrate
from server.storage.base import LEGACY_LEARNER, SearchQuery
from server.storage.embedder import default_embedder
from server.storage.hybrid import HybridStore
from server.storage.postgres import PostgresCaptureStore


@pytest.fixture(params=["postgres", pytest.param("pgvector", marks=pytest.mark.slow)])
async def dsn(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    admin = ADMIN_DSN if request.param == "postgres" else request.getfixturevalue("cluster").dsn
    async with temp_database(admin) as d:
        yield d


@pytest.fixture
async def store(dsn: str, request: pytest.FixtureRequest) -> AsyncIterator[HybridStore]:
    s = HybridStore(PostgresCaptureStore(dsn, pool_max=4), default_embedder(), cache_ttl=60)
    await s.start()
    assert s.backend.pgvector == (request.node.callspec.params["dsn"] == "pgvector")
    yield s
    await s.close()


@pytest.fixture
def index_counts(dsn: str) -> IndexCounts:
    """(full-text entries, vectors, entries matching `word`) read straight from the tables."""

    async def counts(word: str) -> tuple[int, int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            fts = await conn.fetchval("SELECT count(*) FROM captures WHERE tsv IS NOT NULL")
            vectors = await conn.fetchval("SELECT count(*) FROM capture_vectors")
            matching = await conn.fetchval(
                "SELECT count(*) FROM captures WHERE tsv @@ to_tsquery('english', $1)", word
            )
        finally:
            await conn.close()
        return fts, vectors, matching

    return counts


@pytest.mark.slow
async def test_hnsw_filter_hazard_and_both_remedies(cluster: Cluster) -> None:  # noqa: F811
    """With the planner made to walk the HNSW index, a plain filtered scan finds none of
    Ann's captures (Bob's 300 are closer than ef_search reaches) while an iterative scan
    finds all three; the store finds them with the iterative scan, and without it through
    the exact fallback."""
    async with temp_database(cluster.dsn) as dsn:
        name = dsn.rsplit("/", 1)[1]
        admin = await asyncpg.connect(cluster.dsn)
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            await admin.execute(f'ALTER DATABASE "{name}" SET {setting} = off')
        await admin.close()
        backend = PostgresCaptureStore(dsn, pool_max=2)
        store = HybridStore(backend, default_embedder())
        await store.start()
        try:
            assert backend.pgvector and backend.iterative_scan
            await own_found_when_others_are_closer(store)  # iterative scan
            backend.iterative_scan = False
            await own_found_when_others_are_closer(store)  # exact fallback
            assert await plain_hnsw_scan(dsn, store, A, "off") == (0, True)
            assert await plain_hnsw_scan(dsn, store, A, "strict_order") == (3, True)
        finally:
            await store.close()


async def plain_hnsw_scan(
    dsn: str, store: HybridStore, learner: str, iterative: str
) -> tuple[int, bool]:
    """(rows, whether the plan used the HNSW index) of a filtered HNSW query for 3 rows,
    with no exact fallback."""
    assert store.embedder is not None
    vector = store.embedder.embed(["how do vaccines teach the immune system to fight viruses"])[0]
    literal = "[" + ",".join(f"{x:.6g}" for x in vector.tolist()) + "]"
    sql = (
        "SELECT v.id FROM capture_vectors v JOIN captures c ON c.id = v.id "
        f"WHERE v.model = '{store.embedder.name}' AND c.learner_id = $2 "
        "ORDER BY v.embedding_vec::vector(128) <=> $1::text::vector(128) LIMIT 3"
    )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"SET hnsw.ef_search = 100; SET hnsw.iterative_scan = {iterative}")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, literal, learner))
        rows = await conn.fetch(sql, literal, learner)
    finally:
        await conn.close()
    return len(rows), "hnsw" in plan


async def test_migration_from_version_2_makes_old_rows_legacy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with temp_database() as dsn:
        every = pg_migrate.migrations()
        monkeypatch.setattr(pg_migrate, "migrations", lambda: [m for m in every if m[0] < 3])
        conn = await asyncpg.connect(dsn)
        assert await pg_migrate.migrate(conn) == [1, 2]
        embedder = default_embedder()
        old = dataset(time.time())
        vectors = embedder.embed([f"{c.user_text}\n{c.agent_text}" for c in old])
        for c, v in zip(old, vectors, strict=True):
            cid = await conn.fetchval(
                "INSERT INTO captures (capture_id, session_id, created_at, user_text, "
                "agent_text) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                c.capture_id,
                c.session_id,
                datetime.fromtimestamp(c.timestamp, UTC),
                c.user_text,
                c.agent_text,
            )
            await conn.execute(
                "INSERT INTO capture_vectors (id, model, embedding) VALUES ($1, $2, $3)",
                cid,
                embedder.name,
                [float(x) for x in v],
            )
        await conn.close()
        monkeypatch.undo()

        store = HybridStore(PostgresCaptureStore(dsn, pool_max=2), embedder)
        await store.start()
        try:
            assert await store.index_pending() == 0
            legacy = SearchQuery("marmalade", learner_id=LEGACY_LEARNER)
            assert len(await store.keyword_only(legacy)) == 2
            assert await store.keyword_only(SearchQuery("marmalade", learner_id=A)) == []
            assert len(await meaning(store, legacy, 50)) == len(ROWS)
            listed = await store.list_sessions(LEGACY_LEARNER, 10)
            assert [s.session_id for s in listed] == ["bob-2", "bob-1", "ann-2", "ann-1"]
            assert [s.captures for s in listed] == [2, 2, 2, 2]
            assert listed[-1].title == ROWS[0][2]
            assert await store.session_owner("bob-1") == LEGACY_LEARNER
            assert await store.claim_session("bob-1", B) == LEGACY_LEARNER
            history = await store.learner_history(LEGACY_LEARNER, 100)
            assert len(history) == len(ROWS)
        finally:
            await store.close()
