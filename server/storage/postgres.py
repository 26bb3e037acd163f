"""Postgres capture store (asyncpg pool): production captures, full-text and vector search.

A batch is one transaction: claim the sessions nobody owns yet, then one
`INSERT ... SELECT FROM unnest(...) ON CONFLICT (capture_id) DO NOTHING` that stores each
capture under its session's owner unless the session was deleted or the owner forgotten
(atomic, idempotent). Keyword search ranks with `ts_rank` over a generated, GIN-indexed
tsvector and highlights with `ts_headline` (only for the rows returned). Search by meaning
uses pgvector's HNSW index when the extension exists and an exact cosine scan of an
in-process matrix otherwise (see vectors.py).

Erasure and writes exclude each other through one advisory lock (ERASE_LOCK_KEY): every
batch holds it shared, every deletion exclusively. A batch that began before a deletion
is therefore committed before the deletion reads what to delete, and one that begins
after it sees the tombstone; without the lock, a batch committing between the two could
bring back what was just deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np

from server.storage import learners
from server.storage.base import (
    Capture,
    CaptureStats,
    SearchHit,
    SearchQuery,
    StoredCapture,
)
from server.storage.pg_migrate import MIGRATION_LOCK_KEY, migrate
from server.storage.sqlite import capture_row
from server.storage.text import MARK_END, MARK_START, highlight, search_terms, tsquery_or
from server.storage.vectors import VectorIndex, search_index

COMMAND_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
SEQ_WINDOW = 1000  # vectors saved out of sequence order by concurrent instances are re-read
REFRESH_INTERVAL = 0.5
PENDING_RESCAN = 500  # pending scans between two scans from the first capture
HEADLINE_OPTS = (
    f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=30, MinWords=8, "
    'MaxFragments=2, FragmentDelimiter=" … "'
)
_COLUMNS = (
    "id, session_id, extract(epoch FROM created_at), user_text, agent_text, metadata::text, "
    "learner_id"
)
# Held shared by every batch and exclusively by every deletion (see module docstring).
ERASE_LOCK_KEY = 0x4C56_4122
RETENTION_CHUNK = 5000

# Sessions a batch writes to get an owner (the first capture's learner) unless they were
# deleted or that learner forgotten. Sorted by id: concurrent batches take the rows'
# locks in the same order, so they cannot deadlock.
_CLAIM_MANY = (
    "INSERT INTO sessions (session_id, learner_id, created_at) "
    "SELECT DISTINCT ON (u.session_id) u.session_id, u.learner_id, u.created_at "
    "FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY "
    "AS u(session_id, learner_id, created_at, n) "
    "WHERE NOT EXISTS (SELECT 1 FROM deleted_sessions d WHERE d.session_id = u.session_id) "
    "AND NOT EXISTS (SELECT 1 FROM forgotten_learners f WHERE f.learner_id = u.learner_id) "
    "ORDER BY u.session_id, u.n ON CONFLICT (session_id) DO NOTHING"
)
# A capture is stored under its session's owner, and only if it claims no other learner,
# the session was not deleted and the owner not forgotten.
_INSERT = (
    "INSERT INTO captures "
    "(capture_id, session_id, created_at, user_text, agent_text, metadata, learner_id) "
    "SELECT u.capture_id, u.session_id, u.created_at, u.user_text, u.agent_text, u.metadata, "
    "s.learner_id FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], "
    "$5::text[], $6::jsonb[], $7::text[]) "
    "AS u(capture_id, session_id, created_at, user_text, agent_text, metadata, learner_id) "
    "JOIN sessions s ON s.session_id = u.session_id WHERE u.learner_id IN ('', s.learner_id) "
    "AND NOT EXISTS (SELECT 1 FROM deleted_sessions d WHERE d.session_id = u.session_id) "
    "AND NOT EXISTS (SELECT 1 FROM forgotten_learners f WHERE f.learner_id = s.learner_id) "
    "ON CONFLICT (capture_id) DO NOTHING"
)
# One statement: of two learners claiming at once, the second's insert waits for the
# first's and then takes the DO UPDATE path, whose RETURNING gives the committed owner
# (a plain SELECT in the same statement could not see it). A deleted session answers
# with its former owner; a forgotten claimant gets no row and no answer.
_CLAIM_ONE = (
    "WITH claimed AS (INSERT INTO sessions (session_id, learner_id, created_at) "
    "SELECT $1, $2, now() WHERE NOT EXISTS "
    "(SELECT 1 FROM deleted_sessions WHERE session_id = $1) AND NOT EXISTS "
    "(SELECT 1 FROM forgotten_learners WHERE learner_id = $2) "
    "ON CONFLICT (session_id) DO UPDATE SET learner_id = sessions.learner_id "
    "RETURNING learner_id) "
    "SELECT learner_id FROM (SELECT learner_id, 0 AS pick FROM claimed UNION ALL "
    "SELECT learner_id, 1 FROM sessions WHERE session_id = $1 UNION ALL "
    "SELECT learner_id, 2 FROM deleted_sessions WHERE session_id = $1 "
    "AND learner_id IS NOT NULL) owners ORDER BY pick LIMIT 1"
)
_LIST_SESSIONS = (
    "WITH recent AS (SELECT s.session_id, s.learner_id, s.title, s.created_at, "
    "max(c.created_at) AS last_at, count(c.id) AS n FROM sessions s "
    "LEFT JOIN captures c ON c.session_id = s.session_id WHERE s.learner_id = $1 "
    "GROUP BY s.session_id ORDER BY coalesce(max(c.created_at), s.created_at) DESC, "
    "s.session_id DESC LIMIT $2) "
    "SELECT r.session_id, r.learner_id, r.title, extract(epoch FROM r.created_at), "
    "extract(epoch FROM r.last_at), r.n, "
    "(SELECT f.user_text FROM captures f WHERE f.session_id = r.session_id "
    "AND f.user_text <> '' ORDER BY f.created_at, f.id LIMIT 1) FROM recent r "
    "ORDER BY coalesce(r.last_at, r.created_at) DESC, r.session_id DESC"
)


def _vector_literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in v.tolist()) + "]"


class PostgresCaptureStore(learners.LearnerQueries):
    """CaptureStore on Postgres (see module docstring)."""

    name = "postgres"
    list_sessions_sql = _LIST_SESSIONS

    def __init__(self, dsn: str, pool_max: int = 10, pool_min: int = 1) -> None:
        self._dsn = dsn
        self._pool_min = min(pool_min, pool_max)
        self._pool_max = pool_max
        self._pool: asyncpg.Pool | None = None
        self.pgvector = False
        self.iterative_scan = False  # pgvector >= 0.8 keeps scanning HNSW past filtered rows
        self._hnsw: dict[str, int] = {}  # model -> dim with an HNSW index
        self._vectors: dict[str, VectorIndex] = {}
        self._refreshed: dict[str, float] = {}
        self._refresh_lock = asyncio.Lock()
        self._pending_floor = 0
        self._pending_calls = 0

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
        try:
            await migrate(conn)
            self.pgvector = bool(
                await conn.fetchval(
                    "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = 'capture_vectors' AND column_name = 'embedding_vec' "
                    "AND table_schema = current_schema()"
                )
            )
            version = await conn.fetchval(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            )
            self.iterative_scan = version is not None and _version(version) >= (0, 8)
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._pool_min,
            max_size=self._pool_max,
            command_timeout=COMMAND_TIMEOUT,
            timeout=CONNECT_TIMEOUT,
        )

    async def prepare_vectors(self, model: str, dim: int) -> None:
        """With pgvector: the HNSW index for this model (built once, under the lock)."""
        if not self.pgvector:
            return
        slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")[:40]
        literal = model.replace("'", "''")
        async with self._conn() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY, timeout=600)
            try:
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS capture_vectors_hnsw_{slug}_{dim} "
                    f"ON capture_vectors "
                    f"USING hnsw ((embedding_vec::vector({dim})) vector_cosine_ops) "
                    f"WHERE model = '{literal}'",
                    timeout=600,
                )
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        self._hnsw[model] = dim

    async def close(self) -> None:
        if self._pool is not None:
            await asyncio.wait_for(self._pool.close(), COMMAND_TIMEOUT)
            self._pool = None

    async def ping(self) -> bool:
        try:
            async with self._conn() as conn:
                return await conn.fetchval("SELECT 1", timeout=2) == 1
        except Exception:
            return False

    # --- writes ----------------------------------------------------------------------
    async def write_batch(self, captures: Sequence[Capture]) -> None:
        """Claim unowned sessions, then store the captures the rules let in (_INSERT)."""
        if not captures:
            return
        cols = await asyncio.to_thread(_columns, list(captures))  # CPU: off the loop
        claims = [cols[1], [learners.claimant(c) for c in captures], cols[2]]
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", ERASE_LOCK_KEY)
            await conn.execute(_CLAIM_MANY, *claims)
            await conn.execute(_INSERT, *cols)

    # --- ownership ---------------------------------------------------------------------
    async def claim_session(self, session_id: str, learner_id: str) -> str:
        learners.check_learner_id(learner_id)
        async with self._conn() as conn:
            owner = await conn.fetchval(_CLAIM_ONE, session_id, learner_id)
        return learner_id if owner is None else owner  # a forgotten claimant owns nothing

    # --- erasure -----------------------------------------------------------------------
    async def _erase_sessions(self, first: list[str], column: str, value: str) -> int:
        """(See LearnerQueries.) Under the erase lock, which batches hold shared."""
        async with self._erasing() as conn:
            for sql in first:
                await conn.execute(sql, value)
            await conn.execute(f"DELETE FROM sessions WHERE {column} = $1", value)
            ids = await _delete_captures(conn, f"{column} = $1", value)
        return await self._unindex(ids)

    async def delete_older_than(self, timestamp: float) -> int:
        """Retention, RETENTION_CHUNK captures per statement (no long-held row locks).

        Captures go without the erase lock: a batch only adds new captures, which are not
        old. Session rows stay: they say whose an id is, so nobody else can claim it."""
        cutoff = datetime.fromtimestamp(timestamp, UTC)
        deleted = 0
        while True:
            async with self._conn() as conn:
                ids = await _delete_captures(
                    conn,
                    "id IN (SELECT id FROM captures WHERE created_at < $1 LIMIT $2)",
                    cutoff,
                    RETENTION_CHUNK,
                )
            deleted += await self._unindex(ids)
            if len(ids) < RETENTION_CHUNK:
                break
        return deleted

    @contextlib.asynccontextmanager
    async def _erasing(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction holding the erase lock exclusively (see module docstring)."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ERASE_LOCK_KEY)
            yield conn

    async def _unindex(self, ids: list[int]) -> int:
        """Drop deleted captures from the in-process vector indexes; returns len(ids).

        Under the refresh lock: a refresh that read these vectors before they were deleted
        has upserted them by the time this removes them. (Other instances' deletions are
        not seen here; search skips the ids that no longer resolve to a capture.)"""
        if ids and self._vectors:
            async with self._refresh_lock:
                for index in self._vectors.values():
                    index.remove(ids)
        return len(ids)

    # --- reads -----------------------------------------------------------------------
    async def _scalar(self, sql: str, *args: Any) -> Any:
        async with self._conn() as conn:
            return await conn.fetchval(sql, *args)

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        async with self._conn() as conn:
            return await conn.fetch(sql, *args)

    async def _newest_first(self, column: str, value: str, limit: int) -> list[StoredCapture]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM captures WHERE {column} = $1 "
                "ORDER BY created_at DESC, id DESC LIMIT $2",
                value,
                limit,
            )
        return [_stored(r) for r in reversed(rows)]

    async def stats(self) -> CaptureStats:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT count(*), count(DISTINCT session_id), "
                "count(*) FILTER (WHERE created_at >= now() - interval '24 hours'), "
                "extract(epoch FROM max(created_at)) FROM captures"
            )
        last = None if row[3] is None else float(row[3])
        return CaptureStats(row[0], row[1], row[2], last)

    async def get_many(
        self, ids: Sequence[int], learner_id: str | None = None
    ) -> dict[int, StoredCapture]:
        """Captures by id (for hits found by meaning only), only the learner's if given."""
        if not ids:
            return {}
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM captures WHERE id = ANY($1::bigint[]) "
                "AND ($2::text IS NULL OR learner_id = $2)",
                list(ids),
                learner_id,
            )
        return {r[0]: _stored(r) for r in rows}

    async def keyword_search(self, query: SearchQuery, k: int) -> list[SearchHit]:
        terms = search_terms(query.query)
        if not terms:
            return []
        where, params = _filters(query, first=3)
        sql = (
            "WITH q AS (SELECT to_tsquery('english', $1) AS tsq), "
            "top AS (SELECT c.id, ts_rank(c.tsv, q.tsq) AS rank FROM captures c, q "
            f"WHERE c.tsv @@ q.tsq{where} ORDER BY rank DESC, c.id DESC LIMIT $2) "
            "SELECT c.id, c.session_id, extract(epoch FROM c.created_at), c.user_text, "
            "c.agent_text, ts_headline('english', c.user_text || ' — ' || c.agent_text, "
            f"q.tsq, '{HEADLINE_OPTS}'), top.rank "
            "FROM top JOIN captures c ON c.id = top.id, q ORDER BY top.rank DESC, c.id DESC"
        )
        async with self._conn() as conn:
            rows = await conn.fetch(sql, tsquery_or(terms), k, *params)
        return [
            SearchHit(r[0], r[1], float(r[2]), r[3], r[4], highlight(r[5]), float(r[6]))
            for r in rows
        ]

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        """Keyword only; HybridSearch (hybrid.py) adds meaning on top."""
        return await self.keyword_search(query, query.limit)

    # --- embeddings ------------------------------------------------------------------
    async def pending_embeddings(self, limit: int, model: str) -> list[tuple[int, str]]:
        """Captures with no vector yet, oldest first: (id, text to embed).

        The scan starts a little below the lowest capture found pending last time (ids
        can commit out of order across instances), so it stays short at any table size;
        a restart, or every PENDING_RESCAN calls, starts from the beginning again."""
        self._pending_calls += 1
        if self._pending_calls % PENDING_RESCAN == 0:
            self._pending_floor = 0
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT c.id, c.user_text, c.agent_text FROM captures c "
                "WHERE c.id > $1 AND NOT EXISTS (SELECT 1 FROM capture_vectors v "
                "WHERE v.id = c.id AND v.model = $3) ORDER BY c.id LIMIT $2",
                self._pending_floor,
                limit,
                model,
            )
        if rows:
            self._pending_floor = max(self._pending_floor, rows[0][0] - 1 - SEQ_WINDOW)
        return [(r[0], f"{r[1]}\n{r[2]}") for r in rows]

    async def save_embeddings(self, model: str, items: Sequence[tuple[int, np.ndarray]]) -> None:
        if not items:
            return
        ids = [cid for cid, _ in items]
        if self.pgvector:
            texts = [_vector_literal(v) for _, v in items]
            column, cast = "embedding_vec", "vector"
        else:
            texts = ["{" + _vector_literal(v)[1:-1] + "}" for _, v in items]
            column, cast = "embedding", "real[]"
        # Shares the erase lock like a batch: an erasure deletes vectors then captures, and
        # an insert here locks the capture (foreign key) while waiting for a vector row the
        # erasure holds, which deadlocked the two.
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", ERASE_LOCK_KEY)
            await conn.execute(
                f"INSERT INTO capture_vectors (id, model, {column}) "
                f"SELECT u.id, $3, u.v::{cast} FROM unnest($1::bigint[], $2::text[]) AS u(id, v) "
                "WHERE EXISTS (SELECT 1 FROM captures c WHERE c.id = u.id) "
                f"ON CONFLICT (id) DO UPDATE SET model = EXCLUDED.model, "
                f"{column} = EXCLUDED.{column}, embedded_seq = nextval('capture_embed_seq')",
                ids,
                texts,
                model,
            )

    async def vector_search(
        self, vector: np.ndarray, query: SearchQuery, k: int, model: str
    ) -> list[tuple[int, float]]:
        if model in self._hnsw:
            return await self._hnsw_search(vector, query, k, model, self._hnsw[model])
        index = await self._refresh_index(model, int(vector.shape[0]))
        return await search_index(index, vector, query, k)

    async def _hnsw_search(
        self, vector: np.ndarray, query: SearchQuery, k: int, model: str, dim: int
    ) -> list[tuple[int, float]]:
        """Nearest k through the HNSW index, filters in the same statement.

        An HNSW scan yields about ef_search candidates and filters apply after it, so a
        learner whose captures are far from the query could get fewer than k (or none)
        while others' are closer. pgvector >= 0.8 scans on until k rows pass (iterative
        scan); when a filtered query still comes back short, an exact scan of the rows
        the filters allow (the learner's own, by index) gives the true k nearest."""
        where, params = _filters(query, first=3)
        literal = model.replace("'", "''")
        expr = f"v.embedding_vec::vector({dim}) <=> $1::text::vector({dim})"

        def nearest(order: str) -> str:
            return (
                f"SELECT v.id, 1 - ({expr}) FROM capture_vectors v "
                f"JOIN captures c ON c.id = v.id WHERE v.model = '{literal}'{where} "
                f"ORDER BY {order} LIMIT $2"
            )

        args = (_vector_literal(vector), k, *params)
        settings = "SET LOCAL hnsw.ef_search = 100"
        if self.iterative_scan:
            settings += "; SET LOCAL hnsw.iterative_scan = strict_order"
        async with self._conn() as conn, conn.transaction():
            await conn.execute(settings)
            rows = await conn.fetch(nearest(expr), *args)
            if len(rows) < k and where:
                # `+ 0` makes the order an expression the HNSW index cannot serve.
                rows = await conn.fetch(nearest(f"({expr}) + 0"), *args)
        return [(r[0], float(r[1])) for r in rows]

    async def _refresh_index(self, model: str, dim: int) -> VectorIndex:
        """Load vectors saved since the last refresh into the in-process index."""
        index = self._vectors.get(model)
        if index is None:
            index = self._vectors[model] = VectorIndex(dim)
        if time.monotonic() - self._refreshed.get(model, 0.0) < REFRESH_INTERVAL:
            return index
        async with self._refresh_lock:
            start = max(0, index.cursor - SEQ_WINDOW)
            async with self._conn() as conn:
                while True:
                    rows = await conn.fetch(
                        "SELECT v.id, c.session_id, c.learner_id, "
                        "extract(epoch FROM c.created_at), v.embedding, v.embedded_seq "
                        "FROM capture_vectors v "
                        "JOIN captures c ON c.id = v.id WHERE v.model = $1 "
                        "AND v.embedded_seq > $2 ORDER BY v.embedded_seq LIMIT 5000",
                        model,
                        start,
                    )
                    if not rows:
                        break
                    index.upsert(
                        [
                            (r[0], r[1], r[2], float(r[3]), np.asarray(r[4], np.float32))
                            for r in rows
                        ]
                    )
                    start = rows[-1][5]
                    index.cursor = max(index.cursor, start)
            self._refreshed[model] = time.monotonic()
        return index

    # --- plumbing --------------------------------------------------------------------
    def _conn(self) -> Any:
        if self._pool is None:
            raise RuntimeError("Postgres store is not started")
        return self._pool.acquire(timeout=CONNECT_TIMEOUT)


def _columns(captures: list[Capture]) -> list[list[Any]]:
    """Batch as column arrays for unnest(): cleaned text, JSON metadata, timestamptz."""
    rows = [capture_row(c) for c in captures]
    cols: list[list[Any]] = [list(col) for col in zip(*rows, strict=True)]
    cols[2] = [datetime.fromtimestamp(t, UTC) for t in cols[2]]
    return cols


def _filters(query: SearchQuery, first: int) -> tuple[str, list[Any]]:
    clauses, params = [], []
    n = first
    if query.learner_id is not None:
        clauses.append(f"c.learner_id = ${n}")
        params.append(query.learner_id)
        n += 1
    if query.session_id is not None:
        clauses.append(f"c.session_id = ${n}")
        params.append(query.session_id)
        n += 1
    if query.since is not None:
        clauses.append(f"c.created_at >= ${n}")
        params.append(datetime.fromtimestamp(query.since, UTC))
        n += 1
    if query.until is not None:
        clauses.append(f"c.created_at <= ${n}")
        params.append(datetime.fromtimestamp(query.until, UTC))
    return "".join(" AND " + c for c in clauses), params


def _stored(r: Any) -> StoredCapture:
    meta = json.loads(r[5]) if r[5] else {}
    meta = meta if isinstance(meta, dict) else {}
    return StoredCapture(r[0], r[1], float(r[2]), r[3], r[4], meta, r[6])


async def _delete_captures(conn: asyncpg.Connection, where: str, *args: Any) -> list[int]:
    """Delete captures (their tsvector goes with the row, their vectors by cascade)."""
    rows = await conn.fetch(f"DELETE FROM captures WHERE {where} RETURNING id", *args)
    return [r[0] for r in rows]


def _version(text: str) -> tuple[int, ...]:
    """'0.8.5' -> (0, 8, 5) (a part that is not a number counts as 0)."""
    return tuple(int(part) if part.isdigit() else 0 for part in text.split("."))
