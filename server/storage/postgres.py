"""Postgres capture store (asyncpg pool): production captures, full-text and vector search.

Writes are one `INSERT ... SELECT FROM unnest(...) ON CONFLICT (capture_id) DO NOTHING`
per batch: one round trip, atomic, idempotent. Keyword search ranks with `ts_rank` over a
generated, GIN-indexed tsvector and highlights with `ts_headline` (only for the rows
returned). Search by meaning uses pgvector's HNSW index when the extension exists and an
exact cosine scan of an in-process matrix otherwise (see vectors.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np

from server.storage.base import Capture, CaptureStats, SearchHit, SearchQuery, StoredCapture
from server.storage.pg_migrate import MIGRATION_LOCK_KEY, migrate
from server.storage.sqlite import capture_row
from server.storage.text import MARK_END, MARK_START, highlight, search_terms, tsquery_or
from server.storage.vectors import VectorIndex

COMMAND_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
SEQ_WINDOW = 1000  # vectors saved out of sequence order by concurrent instances are re-read
REFRESH_INTERVAL = 0.5
PENDING_RESCAN = 500  # pending scans between two scans from the first capture
HEADLINE_OPTS = (
    f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=30, MinWords=8, "
    'MaxFragments=2, FragmentDelimiter=" … "'
)
_COLUMNS = "id, session_id, extract(epoch FROM created_at), user_text, agent_text"


def _vector_literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in v.tolist()) + "]"


class PostgresCaptureStore:
    """CaptureStore on Postgres (see module docstring)."""

    name = "postgres"

    def __init__(self, dsn: str, pool_max: int = 10, pool_min: int = 1) -> None:
        self._dsn = dsn
        self._pool_min = min(pool_min, pool_max)
        self._pool_max = pool_max
        self._pool: asyncpg.Pool | None = None
        self.pgvector = False
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
        if not captures:
            return
        cols = await asyncio.to_thread(_columns, list(captures))  # CPU: off the loop
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO captures "
                "(capture_id, session_id, created_at, user_text, agent_text, metadata) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], "
                "$5::text[], $6::jsonb[]) ON CONFLICT (capture_id) DO NOTHING",
                *cols,
            )

    # --- reads -----------------------------------------------------------------------
    async def history(self, session_id: str, limit: int) -> list[StoredCapture]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS}, metadata::text FROM captures WHERE session_id = $1 "
                "ORDER BY created_at DESC, id DESC LIMIT $2",
                session_id,
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

    async def get_many(self, ids: Sequence[int]) -> dict[int, StoredCapture]:
        if not ids:
            return {}
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS}, metadata::text FROM captures WHERE id = ANY($1::bigint[])",
                list(ids),
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
        async with self._conn() as conn:
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
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, index.search, vector, k, query.session_id, query.since, query.until
        )

    async def _hnsw_search(
        self, vector: np.ndarray, query: SearchQuery, k: int, model: str, dim: int
    ) -> list[tuple[int, float]]:
        where, params = _filters(query, first=3)
        literal = model.replace("'", "''")
        expr = f"v.embedding_vec::vector({dim}) <=> $1::text::vector({dim})"
        sql = (
            f"SELECT v.id, 1 - ({expr}) FROM capture_vectors v JOIN captures c ON c.id = v.id "
            f"WHERE v.model = '{literal}'{where} ORDER BY {expr} LIMIT $2"
        )
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SET LOCAL hnsw.ef_search = 100")
            rows = await conn.fetch(sql, _vector_literal(vector), k, *params)
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
                        "SELECT v.id, c.session_id, extract(epoch FROM c.created_at), "
                        "v.embedding, v.embedded_seq FROM capture_vectors v "
                        "JOIN captures c ON c.id = v.id WHERE v.model = $1 "
                        "AND v.embedded_seq > $2 ORDER BY v.embedded_seq LIMIT 5000",
                        model,
                        start,
                    )
                    if not rows:
                        break
                    index.upsert(
                        [(r[0], r[1], float(r[2]), np.asarray(r[3], np.float32)) for r in rows]
                    )
                    start = rows[-1][4]
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
    return StoredCapture(
        r[0], r[1], float(r[2]), r[3], r[4], meta if isinstance(meta, dict) else {}
    )
